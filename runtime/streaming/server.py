"""The streaming HTTP server: Exec, Attach and PortForward hand out URLs to it.

One asyncio server; each connection carries one request, parsed with h11, that must
upgrade to SPDY/3.1 or to WebSocket. The path names the kind and a single-use token:

    /exec/<token>  /attach/<token>  /portforward/<token>
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from dataclasses import dataclass

import h11
from wsproto.utilities import generate_accept_token

from runtime.streaming.channels import (PORT_FORWARD, SPDY_REMOTE_COMMAND, SPDY_TUNNEL_PREFIX, WS_REMOTE_COMMAND,
                                        negotiate)
from runtime.streaming.session import PortForwardRequest, RemoteCommandRequest
from runtime.streaming.spdy_session import STREAM_CREATION_TIMEOUT, SpdyPortForward, SpdyRemoteCommand
from runtime.streaming.tokens import MAX_IN_FLIGHT, TOKEN_TTL, TokenCache
from runtime.streaming.wire import TcpWire, WebSocketWire, close_gracefully, set_nodelay
from runtime.streaming.ws_session import WsRemoteCommand

log = logging.getLogger("criservice.streaming")

REQUEST_TIMEOUT = 30.0   # for the client to send its request line and headers
MAX_REQUEST = 64 * 1024

StreamingRequest = RemoteCommandRequest | PortForwardRequest


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []


@dataclass(frozen=True)
class _Upgrade:
    kind: str             # "spdy" or "websocket"
    protocol: str         # the negotiated stream protocol
    response: list[tuple[str, str]]


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in headers if k.lower() == name]


class StreamingServer:
    def __init__(self, address: str = "127.0.0.1", port: int = 0, *, idle_timeout: float = 300.0,
                 creation_timeout: float = STREAM_CREATION_TIMEOUT, token_ttl: float = TOKEN_TTL,
                 max_in_flight: int = MAX_IN_FLIGHT, tls: ssl.SSLContext | None = None) -> None:
        self.address = address
        self.port = port
        self.idle_timeout = idle_timeout
        self.creation_timeout = creation_timeout
        self.tls = tls
        self.tokens: TokenCache[StreamingRequest] = TokenCache(token_ttl, max_in_flight)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    # ---- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.address, self.port, ssl=self.tls,
                                                  limit=MAX_REQUEST)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("streaming server listening", extra={"fields": {"url": self.base_url}})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()   # returns once the listener is closed in 3.11
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    @property
    def active(self) -> int:
        """Connections being served (for tests and metrics)."""
        return len(self._connections)

    @property
    def base_url(self) -> str:
        host = self.address
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(host)
            if ip.is_unspecified:
                host = "127.0.0.1" if ip.version == 4 else "::1"
            if ip.version == 6:
                host = f"[{host}]" if not ip.is_unspecified else "[::1]"
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def url(self, request: StreamingRequest) -> str:
        """A URL for one use of `request` (ResourceExhausted when too many wait already)."""
        return f"{self.base_url}/{request.kind}/{self.tokens.issue(request)}"

    # ---- connections ------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        set_nodelay(writer)
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST)
        try:
            try:
                request = await asyncio.wait_for(self._read_request(http, reader), REQUEST_TIMEOUT)
                streaming, upgrade = self._route(request)
            except HttpError as e:
                await self._refuse(http, writer, e)
                await close_gracefully(reader, writer)
                return
            except (TimeoutError, h11.RemoteProtocolError, ConnectionError):
                writer.close()
                return
            writer.write(http.send(h11.InformationalResponse(status_code=101, headers=upgrade.response)))
            pending, _closed = http.trailing_data
            await self._session(reader, writer, pending, streaming, upgrade)
        except asyncio.CancelledError:
            writer.close()
            raise
        except Exception:   # noqa: BLE001 - one bad connection must not take the server down
            log.exception("streaming connection failed")
            writer.close()

    async def _read_request(self, http: h11.Connection, reader: asyncio.StreamReader) -> h11.Request:
        request: h11.Request | None = None
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(MAX_REQUEST)
                http.receive_data(data)
                if not data and request is None:
                    raise ConnectionError("the client closed before its request")
                continue
            if isinstance(event, h11.Request):
                request = event
                continue
            if isinstance(event, h11.Data):
                continue   # a body is not expected; ignored
            if event is h11.PAUSED or isinstance(event, h11.EndOfMessage):
                if request is None:
                    raise h11.RemoteProtocolError("no request")
                if isinstance(event, h11.EndOfMessage) and http.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                    return request
                if event is h11.PAUSED:
                    return request
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("the client closed before its request")

    def _route(self, request: h11.Request) -> tuple[StreamingRequest, _Upgrade]:
        if request.method not in (b"GET", b"POST"):
            raise HttpError(405, "method not allowed")
        parts = request.target.decode("latin-1").split("?", 1)[0].strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            raise HttpError(404, "not found")
        kind, token = parts
        # Peek, check everything, then consume: a refused request leaves the token to its owner.
        streaming = self.tokens.peek(token)
        if streaming is None or streaming.kind != kind:
            raise HttpError(404, f"{kind} token not found or expired")
        upgrade = self._upgrade(streaming, list(request.headers))
        if self.tokens.consume(token) is not streaming:   # expired (or taken) since the peek
            raise HttpError(404, f"{kind} token not found or expired")
        return streaming, upgrade

    def _upgrade(self, streaming: StreamingRequest, headers: list[tuple[bytes, bytes]]) -> _Upgrade:
        """The upgrade the request's headers ask for, or the HttpError refusing them."""
        upgrade = ",".join(_header(headers, b"upgrade")).lower()
        connection = ",".join(_header(headers, b"connection")).lower()
        if "upgrade" not in connection:
            raise HttpError(400, "this endpoint needs an upgrade to SPDY/3.1 or WebSocket")
        if upgrade.strip() == "websocket":
            return self._websocket(streaming, headers)
        if "spdy/3.1" in upgrade:
            return self._spdy(streaming, headers)
        raise HttpError(400, f"unsupported upgrade {upgrade!r}")

    @staticmethod
    def _spdy(streaming: StreamingRequest, headers: list[tuple[bytes, bytes]]) -> _Upgrade:
        supported = (PORT_FORWARD,) if isinstance(streaming, PortForwardRequest) else SPDY_REMOTE_COMMAND
        offered = _header(headers, b"x-stream-protocol-version")
        if not offered:
            raise HttpError(400, "unable to upgrade: X-Stream-Protocol-Version is missing")
        protocol = negotiate(offered, supported)
        if protocol is None:
            raise HttpError(403, f"unable to upgrade: no common protocol; this side speaks {', '.join(supported)}",
                            [("X-Accepted-Stream-Protocol-Versions", p) for p in supported])
        return _Upgrade("spdy", protocol, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                           ("X-Stream-Protocol-Version", protocol)])

    @staticmethod
    def _websocket(streaming: StreamingRequest, headers: list[tuple[bytes, bytes]]) -> _Upgrade:
        key = _header(headers, b"sec-websocket-key")
        if len(key) != 1 or _header(headers, b"sec-websocket-version") != ["13"]:
            raise HttpError(400, "bad WebSocket handshake", [("Sec-WebSocket-Version", "13")])
        offered = _header(headers, b"sec-websocket-protocol")
        if isinstance(streaming, PortForwardRequest):
            supported: tuple[str, ...] = (SPDY_TUNNEL_PREFIX + PORT_FORWARD,)
        else:
            supported = WS_REMOTE_COMMAND
        protocol = negotiate(offered, supported)
        if protocol is None:
            raise HttpError(400, f"unable to upgrade: requested protocols {offered} are not supported; "
                                 f"this side speaks {', '.join(supported)}")
        return _Upgrade("websocket", protocol, [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", generate_accept_token(key[0].encode()).decode()),
            ("Sec-WebSocket-Protocol", protocol)])

    async def _refuse(self, http: h11.Connection, writer: asyncio.StreamWriter, error: HttpError) -> None:
        body = (str(error) + "\n").encode()
        log.info("streaming request refused", extra={"fields": {"status": error.status, "reason": str(error)}})
        try:
            writer.write(http.send(h11.Response(status_code=error.status, headers=[
                ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                ("Connection", "close"), *error.headers])))
            writer.write(http.send(h11.Data(data=body)))
            writer.write(http.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes,
                       streaming: StreamingRequest, upgrade: _Upgrade) -> None:
        fields = {"kind": streaming.kind, "transport": upgrade.kind, "protocol": upgrade.protocol}
        log.debug("streaming session starts", extra={"fields": fields})
        if upgrade.kind == "spdy":
            wire: TcpWire | WebSocketWire = TcpWire(reader, writer, pending)
        else:
            wire = WebSocketWire(reader, writer, pending)
        if isinstance(streaming, PortForwardRequest):
            protocol = upgrade.protocol.removeprefix(SPDY_TUNNEL_PREFIX)
            assert protocol == PORT_FORWARD
            await SpdyPortForward(wire, streaming, idle_timeout=self.idle_timeout,
                                  creation_timeout=self.creation_timeout).serve()
        elif isinstance(wire, WebSocketWire):
            await WsRemoteCommand(wire, upgrade.protocol, streaming, idle_timeout=self.idle_timeout).serve()
        else:
            await SpdyRemoteCommand(wire, upgrade.protocol, streaming, idle_timeout=self.idle_timeout,
                                    creation_timeout=self.creation_timeout).serve()
        log.debug("streaming session ended", extra={"fields": fields})
