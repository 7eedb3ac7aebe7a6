"""What a streaming session gives the code that runs it, whatever the transport.

A remote command (exec or attach) is a coroutine function taking `RemoteStreams` and
returning an `Outcome`; a port-forward dials a port of the pod. The transports (SPDY,
WebSocket) build these from their streams or channels.
"""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from runtime.streaming.channels import Outcome

INBOX_LIMIT = 1 << 20   # bytes a client may send ahead of the reader before reading pauses


class Inbox:
    """Bytes the client sent on one stream, in order, then EOF."""

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self.limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._eof = False
        self._changed = asyncio.Event()

    def put(self, data: bytes) -> None:
        if self._eof or not data:
            return
        self._chunks.append(data)
        self._size += len(data)
        self._changed.set()

    def close(self) -> None:
        self._eof = True
        self._changed.set()

    @property
    def full(self) -> bool:
        return self._size >= self.limit and not self._eof

    async def wait_room(self) -> None:
        while self.full:
            self._changed.clear()
            await self._changed.wait()

    async def read(self) -> bytes:
        """The next chunk; b"" at EOF."""
        while not self._chunks:
            if self._eof:
                return b""
            self._changed.clear()
            await self._changed.wait()
        data = self._chunks.popleft()
        self._size -= len(data)
        self._changed.set()   # room for the transport's reader
        return data


class Outlet(Protocol):
    """A stream to the client."""

    async def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


@dataclass
class RemoteStreams:
    stdin: Inbox | None = None
    stdout: Outlet | None = None
    stderr: Outlet | None = None
    resizes: asyncio.Queue[tuple[int, int]] | None = None    # (width, height)
    gone: asyncio.Event = field(default_factory=asyncio.Event)   # the client went away


RemoteCommand = Callable[[RemoteStreams], Awaitable[Outcome]]
Dialer = Callable[[int], Awaitable[socket.socket]]


@dataclass(frozen=True)
class RemoteCommandRequest:
    """An Exec or Attach waiting for its client: which streams, and what runs them."""
    kind: str                   # "exec" or "attach"
    run: RemoteCommand
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


@dataclass(frozen=True)
class PortForwardRequest:
    """A PortForward waiting for its client: how to reach a port of the pod."""
    dial: Dialer
    ports: tuple[int, ...] = ()   # the ports asked for in the CRI request (informative)
    kind: str = "portforward"


async def pump(source: Inbox, write: Callable[[bytes], Awaitable[None]]) -> None:
    """Everything from `source` into `write` until EOF."""
    while data := await source.read():
        await write(data)
