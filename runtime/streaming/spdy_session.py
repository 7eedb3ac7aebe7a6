"""Streaming sessions over SPDY/3.1: remote command (exec, attach) and port-forward.

The client opens every stream; this side answers each with SYN_REPLY at once (client-go
waits for it before it writes), and ends the session with FIN on its streams and GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.streaming import spdy
from runtime.streaming.channels import (ERROR, RESIZE, SPDY_V1, SPDY_V2, STDERR, STDIN, STDOUT, STREAM_TYPES,
                                        ChannelError, Outcome, ResizeDecoder, status_bytes, status_version)
from runtime.streaming.session import Inbox, PortForwardRequest, RemoteCommandRequest, RemoteStreams

log = logging.getLogger("criservice.streaming")

STREAM_CREATION_TIMEOUT = 30.0   # for the client to open the streams a session needs


class Wire(Protocol):
    async def recv(self) -> bytes: ...
    def push(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    async def close(self) -> None: ...


class IdleTimer:
    """Fires `on_idle` once nothing happened for `timeout` seconds."""

    def __init__(self, timeout: float, on_idle: Callable[[], None]) -> None:
        self.timeout = timeout
        self._on_idle = on_idle
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(self._last + timeout, self._check)

    def touch(self) -> None:
        self._last = self._loop.time()

    def _check(self) -> None:
        due = self._last + self.timeout
        if self._loop.time() >= due:
            self._handle = None
            self._on_idle()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _SpdyOutlet:
    def __init__(self, peer: "_SpdyPeer", stream_id: int) -> None:
        self.peer = peer
        self.stream_id = stream_id

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.peer.conn.send_data(self.stream_id, data)
        self.peer.flush()
        self.peer.idle.touch()
        await self.peer.drain()

    def close(self) -> None:
        self.peer.conn.end_stream(self.stream_id)
        self.peer.flush()


class _SpdyPeer:
    """The read loop and the writing side of one SPDY connection."""

    def __init__(self, wire: Wire, idle_timeout: float) -> None:
        self.wire = wire
        self.conn = spdy.Connection()
        self.gone = asyncio.Event()
        self.idle = IdleTimer(idle_timeout, self._idle)

    def _idle(self) -> None:
        log.info("streaming session idle; closing it", extra={"fields": {"timeout": self.idle.timeout}})
        self.gone.set()

    def flush(self) -> None:
        self.wire.push(self.conn.data_to_send())

    async def drain(self) -> None:
        try:
            await self.wire.drain()
        except Exception:   # noqa: BLE001 - any failure to write means the client is gone
            self.gone.set()
            raise

    async def read_loop(self, on_event: Callable[[spdy.Event], None],
                        inboxes: Callable[[], list[Inbox]]) -> None:
        try:
            while not self.gone.is_set():
                data = await self.wire.recv()
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except spdy.ProtocolError as e:
                    log.warning("SPDY protocol error; closing the connection", extra={"fields": {"error": str(e)}})
                    self.conn.goaway(spdy.GOAWAY_PROTOCOL_ERROR)
                    break
                for event in events:
                    if isinstance(event, spdy.GoAwayReceived):
                        self.gone.set()
                    elif not isinstance(event, spdy.StreamReplied):
                        self.idle.touch()
                    on_event(event)
                self.flush()
                for inbox in inboxes():   # backpressure: stop reading while a reader lags
                    await inbox.wait_room()
        except Exception as e:   # noqa: BLE001 - the wire failed: the client is gone
            log.debug("streaming connection failed", extra={"fields": {"error": repr(e)}})
        finally:
            self.flush()
            self.gone.set()

    async def finish(self, stream_ids: list[int]) -> None:
        for sid in stream_ids:
            self.conn.end_stream(sid)
        self.conn.goaway()
        self.flush()
        self.idle.cancel()
        with contextlib.suppress(Exception):
            await self.wire.close()


async def _until_gone(work: Awaitable[object], gone: asyncio.Event) -> None:
    """Wait for `work`, or for `gone` (then `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---- remote command ---------------------------------------------------------------------------

class SpdyRemoteCommand:
    def __init__(self, wire: Wire, protocol: str, request: RemoteCommandRequest, *, idle_timeout: float,
                 creation_timeout: float = STREAM_CREATION_TIMEOUT) -> None:
        self.peer = _SpdyPeer(wire, idle_timeout)
        self.protocol = protocol
        self.request = request
        self.creation_timeout = creation_timeout
        self.streams: dict[int, int] = {}       # channel -> stream id
        self.channels: dict[int, int] = {}      # stream id -> channel
        self.expected = self._expected()
        self.ready = asyncio.Event()
        self.remote = RemoteStreams(gone=self.peer.gone)
        self._resize = ResizeDecoder()

    def _expected(self) -> set[int]:
        r = self.request
        want = {ERROR}
        if r.stdin:
            want.add(STDIN)
        if r.stdout:
            want.add(STDOUT)
        if r.stderr and not (r.tty and self.protocol != SPDY_V1):
            want.add(STDERR)
        if r.tty and self.protocol not in (SPDY_V1, SPDY_V2):
            want.add(RESIZE)
        return want

    def _on_event(self, event: spdy.Event) -> None:
        conn = self.peer.conn
        if isinstance(event, spdy.StreamOpened):
            kind = (event.headers.get("streamtype") or [""])[0]
            channel = STREAM_TYPES.get(kind)
            if channel is None or channel in self.streams or self.ready.is_set():
                conn.reset_stream(event.stream_id, spdy.RST_REFUSED_STREAM)
                return
            conn.reply(event.stream_id)
            self.streams[channel] = event.stream_id
            self.channels[event.stream_id] = channel
            self._attach(channel, event.stream_id)
            if event.fin:
                self._ended(channel)
            if self.expected <= self.streams.keys():
                self.ready.set()
        elif isinstance(event, spdy.DataReceived):
            channel = self.channels.get(event.stream_id)
            if channel == STDIN and self.remote.stdin is not None:
                self.remote.stdin.put(event.data)
            elif channel == RESIZE and self.remote.resizes is not None:
                try:
                    for size in self._resize.feed(event.data):
                        self.remote.resizes.put_nowait(size)
                except ChannelError:
                    conn.reset_stream(event.stream_id, spdy.RST_PROTOCOL_ERROR)
        elif isinstance(event, spdy.StreamEnded):
            channel = self.channels.get(event.stream_id)
            if channel is not None:
                self._ended(channel)
        elif isinstance(event, spdy.StreamReset):
            channel = self.channels.get(event.stream_id)
            if channel == STDIN:
                self._ended(channel)
            elif channel in (STDOUT, STDERR, ERROR):
                self.peer.gone.set()   # the client stopped listening

    def _attach(self, channel: int, stream_id: int) -> None:
        if channel == STDIN:
            self.remote.stdin = Inbox()
        elif channel == STDOUT:
            self.remote.stdout = _SpdyOutlet(self.peer, stream_id)
        elif channel == STDERR:
            self.remote.stderr = _SpdyOutlet(self.peer, stream_id)
        elif channel == RESIZE:
            self.remote.resizes = asyncio.Queue()

    def _ended(self, channel: int) -> None:
        if channel == STDIN and self.remote.stdin is not None:
            self.remote.stdin.close()

    def _inboxes(self) -> list[Inbox]:
        return [self.remote.stdin] if self.remote.stdin is not None else []

    async def serve(self) -> None:
        reader = asyncio.ensure_future(self.peer.read_loop(self._on_event, self._inboxes))
        try:
            ready = asyncio.ensure_future(self.ready.wait())
            await asyncio.wait({ready, reader}, timeout=self.creation_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not self.ready.is_set():
                if not self.peer.gone.is_set():
                    log.warning("the client did not open its streams in time", extra={"fields": {
                        "kind": self.request.kind, "have": sorted(self.streams), "want": sorted(self.expected)}})
                return
            outcome = await self.request.run(self.remote)
            if not self.peer.gone.is_set():
                await self._report(outcome)
        finally:
            self.peer.gone.set()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self.peer.finish(list(self.streams.values()))

    async def _report(self, outcome: Outcome) -> None:
        sid = self.streams.get(ERROR)
        if sid is None:
            return
        message = status_bytes(outcome, status_version(self.protocol))
        if message:
            self.peer.conn.send_data(sid, message)
        self.peer.conn.end_stream(sid)
        self.peer.flush()
        with contextlib.suppress(Exception):
            await self.peer.drain()


# ---- port-forward -------------------------------------------------------------------------------

@dataclass
class _Pair:
    port: int
    error_id: int = 0
    data_id: int = 0
    data: Inbox = field(default_factory=Inbox)
    task: asyncio.Task[None] | None = None
    reset: asyncio.Event = field(default_factory=asyncio.Event)


class SpdyPortForward:
    """Each forwarded connection is a pair of streams (``streamtype`` error and data) with
    the same ``requestid`` and ``port``; many pairs share one connection."""

    def __init__(self, wire: Wire, request: PortForwardRequest, *, idle_timeout: float,
                 creation_timeout: float = STREAM_CREATION_TIMEOUT) -> None:
        self.peer = _SpdyPeer(wire, idle_timeout)
        self.request = request
        self.creation_timeout = creation_timeout
        self.pairs: dict[str, _Pair] = {}
        self.by_stream: dict[int, _Pair] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def _request_id(self, event: spdy.StreamOpened, kind: str) -> str:
        rid = (event.headers.get("requestid") or [""])[0]
        if rid:
            return rid
        # Clients before requestid open the error stream, then the data stream, back to back.
        return str(event.stream_id if kind == "error" else event.stream_id - 2)

    def _on_event(self, event: spdy.Event) -> None:
        conn = self.peer.conn
        if isinstance(event, spdy.StreamOpened):
            kind = (event.headers.get("streamtype") or [""])[0]
            port_text = (event.headers.get("port") or [""])[0]
            port = int(port_text) if port_text.isdigit() else 0
            if kind not in ("error", "data") or not 0 < port < 65536:
                conn.reset_stream(event.stream_id, spdy.RST_REFUSED_STREAM)
                return
            rid = self._request_id(event, kind)
            pair = self.pairs.setdefault(rid, _Pair(port))
            if getattr(pair, f"{kind}_id") or pair.port != port:
                conn.reset_stream(event.stream_id, spdy.RST_REFUSED_STREAM)
                return
            conn.reply(event.stream_id)
            setattr(pair, f"{kind}_id", event.stream_id)
            self.by_stream[event.stream_id] = pair
            if kind == "data" and event.fin:
                pair.data.close()
            if pair.error_id and pair.data_id:
                del self.pairs[rid]
                self._start(pair)
            else:
                self._start(pair, waiting=True)
        elif isinstance(event, spdy.DataReceived):
            known = self.by_stream.get(event.stream_id)
            if known is not None and event.stream_id == known.data_id:
                known.data.put(event.data)
        elif isinstance(event, spdy.StreamEnded):
            known = self.by_stream.get(event.stream_id)
            if known is not None and event.stream_id == known.data_id:
                known.data.close()
        elif isinstance(event, spdy.StreamReset):
            known = self.by_stream.get(event.stream_id)
            if known is not None:
                known.reset.set()
                known.data.close()

    def _start(self, pair: _Pair, waiting: bool = False) -> None:
        task = asyncio.ensure_future(self._wait_pair(pair) if waiting else self._forward(pair))
        if not waiting and pair.task is not None:
            pair.task.cancel()   # the timeout of the incomplete pair
        pair.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _wait_pair(self, pair: _Pair) -> None:
        await asyncio.sleep(self.creation_timeout)   # a timeout: cancelled once the pair is complete
        for rid, p in list(self.pairs.items()):
            if p is pair:
                del self.pairs[rid]
        for sid in (pair.error_id, pair.data_id):
            if sid:
                self.peer.conn.reset_stream(sid, spdy.RST_REFUSED_STREAM)
                self.by_stream.pop(sid, None)
        self.peer.flush()

    def _inboxes(self) -> list[Inbox]:
        return [p.data for p in self.by_stream.values()]

    async def _forward(self, pair: _Pair) -> None:
        conn = self.peer.conn
        try:
            try:
                sock = await self.request.dial(pair.port)
            except OSError as e:
                message = f"error forwarding port {pair.port} to pod: {e.strerror or e}"
                conn.send_data(pair.error_id, message.encode())
                log.info("port-forward failed", extra={"fields": {"port": pair.port, "error": str(e)}})
                return
            try:
                await forward(sock, pair.data, _SpdyOutlet(self.peer, pair.data_id), pair.reset)
            finally:
                sock.close()
        except Exception as e:   # noqa: BLE001 - reported to the client on the error stream
            log.warning("port-forward connection failed", extra={"fields": {"port": pair.port, "error": repr(e)}})
            if conn.is_open(pair.error_id):
                conn.send_data(pair.error_id, f"error forwarding port {pair.port}: {e}".encode())
        finally:
            conn.end_stream(pair.data_id)
            conn.end_stream(pair.error_id)
            self.peer.flush()
            self.by_stream.pop(pair.data_id, None)
            self.by_stream.pop(pair.error_id, None)

    async def serve(self) -> None:
        try:
            await self.peer.read_loop(self._on_event, self._inboxes)
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.peer.finish([])


async def forward(sock: socket.socket, inbound: Inbox, outbound: "_SpdyOutlet | _Writer",
                  reset: asyncio.Event) -> None:
    """Copy between a connected socket and a stream pair until the pod's side is done
    (its EOF), or the client reset the stream."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)

    async def to_pod() -> None:
        while data := await inbound.read():
            await loop.sock_sendall(sock, data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    async def from_pod() -> None:
        while data := await loop.sock_recv(sock, 65536):
            await outbound.write(data)

    up = asyncio.ensure_future(to_pod())
    down = asyncio.ensure_future(from_pod())
    resetting = asyncio.ensure_future(reset.wait())
    try:
        pending: set[asyncio.Future[Any]] = {up, down, resetting}
        while down in pending and resetting in pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not resetting and (error := task.exception()) is not None:
                    raise error
    finally:
        for task in (up, down, resetting):
            task.cancel()
        await asyncio.gather(up, down, resetting, return_exceptions=True)


class _Writer(Protocol):
    async def write(self, data: bytes) -> None: ...
