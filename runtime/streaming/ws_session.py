"""Remote command (exec, attach) over WebSocket channels (``v5.channel.k8s.io`` and older)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from runtime.streaming.channels import (ERROR, RESIZE, STDERR, STDIN, STDOUT, ChannelError, Outcome,
                                        ResizeDecoder, WsCodec, status_bytes, status_version)
from runtime.streaming.session import Inbox, RemoteCommandRequest, RemoteStreams
from runtime.streaming.spdy_session import IdleTimer
from runtime.streaming.wire import WebSocketWire, WireClosed

log = logging.getLogger("criservice.streaming")


class _WsOutlet:
    def __init__(self, session: "WsRemoteCommand", channel: int) -> None:
        self.session = session
        self.channel = channel

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.session.send(self.channel, data)
        self.session.idle.touch()
        try:
            await self.session.wire.drain()
        except WireClosed:
            self.session.remote.gone.set()
            raise

    def close(self) -> None:
        """Channels end with the session: the kubelet sends no half-close either."""


class WsRemoteCommand:
    def __init__(self, wire: WebSocketWire, protocol: str, request: RemoteCommandRequest, *,
                 idle_timeout: float) -> None:
        self.wire = wire
        self.codec = WsCodec(protocol)
        self.protocol = protocol
        self.request = request
        self.remote = RemoteStreams()
        self.idle = IdleTimer(idle_timeout, self.remote.gone.set)
        if request.stdin:
            self.remote.stdin = Inbox()
        if request.stdout:
            self.remote.stdout = _WsOutlet(self, STDOUT)
        if request.stderr:
            self.remote.stderr = _WsOutlet(self, STDERR)
        if request.tty:
            self.remote.resizes = asyncio.Queue()
        self._resize = ResizeDecoder()

    def send(self, channel: int, data: bytes) -> None:
        self.wire.push_message(self.codec.encode(channel, data))

    async def _read_loop(self) -> None:
        try:
            while (message := await self.wire.recv_message()) is not None:
                self.idle.touch()
                try:
                    channel, data = self.codec.decode(message)
                except ChannelError as e:
                    log.warning("WebSocket channel protocol error", extra={"fields": {"error": str(e)}})
                    break
                stdin = self.remote.stdin
                if channel == STDIN and stdin is not None:
                    if data is None:
                        stdin.close()
                    else:
                        stdin.put(data)
                        await stdin.wait_room()
                elif channel == RESIZE and self.remote.resizes is not None and data:
                    try:
                        for size in self._resize.feed(data):
                            self.remote.resizes.put_nowait(size)
                    except ChannelError:
                        break
        except Exception as e:   # noqa: BLE001 - the client is gone, whatever the reason
            log.debug("WebSocket read failed", extra={"fields": {"error": repr(e)}})
        finally:
            self.remote.gone.set()

    async def serve(self) -> None:
        # The kubelet announces the session with an empty message on the first channel
        # the client reads.
        first = STDOUT if self.request.stdout else STDERR if self.request.stderr else ERROR
        self.send(first, b"")
        reader = asyncio.ensure_future(self._read_loop())
        try:
            outcome = await self.request.run(self.remote)
            if not self.remote.gone.is_set():
                self._report(outcome)
        finally:
            self.idle.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            with contextlib.suppress(Exception):
                await self.wire.close()

    def _report(self, outcome: Outcome) -> None:
        message = status_bytes(outcome, status_version(self.protocol))
        if message:
            self.send(ERROR, message)
