"""Byte pipes under the session protocols: a TCP connection, or messages of a WebSocket.

A SPDY connection runs over the upgraded TCP connection, or (client-go's port-forward
over WebSocket, subprotocol ``SPDY/3.1+portforward.k8s.io``) inside binary WebSocket
messages. The WebSocket channel protocol uses `WebSocketWire` for whole messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from wsproto.connection import Connection as WSConnection
from wsproto.connection import ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import ProtocolError as WSProtocolError

READ_SIZE = 256 * 1024
CLOSE_LINGER = 5.0          # for the client to close its side after ours
MAX_WS_MESSAGE = 16 << 20


class WireClosed(Exception):
    """The peer is gone."""


class TcpWire:
    """The upgraded HTTP connection itself."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes = b"") -> None:
        self.reader = reader
        self.writer = writer
        self._pending = pending

    async def recv(self) -> bytes:
        """Some bytes; b"" once the peer closed its side."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        try:
            return await self.reader.read(READ_SIZE)
        except (ConnectionError, OSError):
            return b""

    def push(self, data: bytes) -> None:
        """Queue bytes for sending without waiting (keeps them in order with others)."""
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise WireClosed(str(e)) from None

    async def send(self, data: bytes) -> None:
        self.push(data)
        await self.drain()

    async def close(self) -> None:
        """Flush, half-close, and let the peer read everything before the socket goes."""
        await close_gracefully(self.reader, self.writer)


async def close_gracefully(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Closing with unread input would reset the connection and could discard what the
    # peer has not read yet: send FIN, then read until the peer closes too (or a while).
    try:
        await asyncio.wait_for(writer.drain(), CLOSE_LINGER)
        if writer.can_write_eof():
            writer.write_eof()
        deadline = asyncio.get_running_loop().time() + CLOSE_LINGER
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            if not await asyncio.wait_for(reader.read(READ_SIZE), remaining):
                break
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


class WebSocketWire:
    """A server-side WebSocket over the upgraded connection (handshake already answered)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes = b"") -> None:
        self.tcp = TcpWire(reader, writer)
        self.ws = WSConnection(ConnectionType.SERVER, trailing_data=pending)
        self._partial: list[bytes | str] = []
        self._partial_size = 0
        self._messages: list[bytes | str] = []
        self._closed = False
        self._seeded = bool(pending)

    def _events(self) -> None:
        try:
            for event in self.ws.events():
                if isinstance(event, Message):
                    self._partial.append(event.data)
                    self._partial_size += len(event.data)
                    if self._partial_size > MAX_WS_MESSAGE:
                        raise WireClosed("WebSocket message too large")
                    if event.message_finished:
                        parts, self._partial, self._partial_size = self._partial, [], 0
                        if isinstance(event, TextMessage):
                            self._messages.append("".join(str(p) for p in parts))
                        else:
                            assert isinstance(event, BytesMessage)
                            self._messages.append(b"".join(bytes(p) for p in parts))   # type: ignore[arg-type]
                elif isinstance(event, Ping):
                    self.tcp.push(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self.ws.state == ConnectionState.REMOTE_CLOSING:
                        self.tcp.push(self.ws.send(event.response()))
                    self._closed = True
        except WSProtocolError as e:
            raise WireClosed(f"WebSocket protocol error: {e}") from None

    async def recv_message(self) -> bytes | str | None:
        """The next whole message; None once the WebSocket closed."""
        while True:
            if self._seeded:
                self._seeded = False
                self._events()
            if self._messages:
                return self._messages.pop(0)
            if self._closed:
                return None
            data = await self.tcp.recv()
            self.ws.receive_data(data or None)
            self._events()
            if not data and not self._messages:
                return None

    async def recv(self) -> bytes:
        """The bytes of the next binary message (SPDY tunnelled in WebSocket); b"" at the end."""
        while True:
            message = await self.recv_message()
            if message is None:
                return b""
            if isinstance(message, str):
                raise WireClosed("text message in a binary tunnel")
            if message:
                return message

    def push_message(self, data: bytes | str) -> None:
        if self.ws.state != ConnectionState.OPEN:
            return
        event = TextMessage(data=data) if isinstance(data, str) else BytesMessage(data=data)
        self.tcp.push(self.ws.send(event))

    def push(self, data: bytes) -> None:
        if data:
            self.push_message(data)

    async def drain(self) -> None:
        await self.tcp.drain()

    async def send(self, data: bytes) -> None:
        self.push(data)
        await self.drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws.state == ConnectionState.OPEN:
            self.tcp.push(self.ws.send(CloseConnection(code=code, reason=reason)))
        await self.tcp.close()


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
