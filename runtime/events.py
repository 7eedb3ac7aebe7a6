"""Container and sandbox lifecycle events, fanned out to any number of subscribers.

The container and pod machinery publish (`EventHub.publish`, never blocking);
each subscriber has its own bounded buffer. A subscriber that does not keep up
loses the events its buffer has no room for, and they are counted, so a stuck
client never holds up the daemon or the other subscribers. The kubelet's
Evented PLEG relists on its own period, so a dropped event is a delay for it,
not a lost state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

log = logging.getLogger("criservice.events")

CREATED = "created"
STARTED = "started"
STOPPED = "stopped"
DELETED = "deleted"
KINDS = (CREATED, STARTED, STOPPED, DELETED)

DEFAULT_BUFFER = 1000


@dataclass(frozen=True)
class Event:
    kind: str               # one of KINDS
    container_id: str       # for sandbox events, the sandbox id (as containerd and CRI-O do)
    sandbox_id: str
    timestamp_ns: int


class Subscription:
    """One subscriber's buffer; iterate it for events, close it when done."""

    def __init__(self, hub: "EventHub", size: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self._loop = asyncio.get_running_loop()
        self.dropped = 0

    def _offer(self, event: Event) -> bool:
        try:
            self._queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            return False

    async def get(self) -> Event:
        return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._hub._remove(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        self.buffer = buffer
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self.published = 0
        self.dropped = 0      # summed over every subscriber, past and present

    def subscribe(self, buffer: int | None = None) -> Subscription:
        """A new subscriber (call from the event loop) sees the events published after this."""
        sub = Subscription(self, buffer or self.buffer)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, kind: str, container_id: str, sandbox_id: str, timestamp_ns: int) -> None:
        """Never blocks and never raises: safe to call from any point of the machinery.
        From another thread, the event is handed to each subscriber's loop."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        event = Event(kind, container_id, sandbox_id, timestamp_ns)
        with self._lock:
            subscribers = list(self._subscribers)
            self.published += 1
        for sub in subscribers:
            if _in_loop(sub._loop):
                self._deliver(sub, event)
            else:
                try:
                    sub._loop.call_soon_threadsafe(self._deliver, sub, event)
                except RuntimeError:  # that subscriber's loop is closed: it is gone
                    self._remove(sub)

    def _deliver(self, sub: Subscription, event: Event) -> None:
        if not sub._offer(event):
            with self._lock:
                self.dropped += 1
            if sub.dropped == 1 or sub.dropped % 1000 == 0:
                log.warning("event subscriber too slow; events dropped",
                            extra={"fields": {"dropped": sub.dropped}})


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
