"""The streaming server end to end over loopback TCP, with fake commands (no root):
HTTP upgrade, SPDY and WebSocket sessions, port-forward pairs, tokens, bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h11
import pytest
from wsproto import WSConnection
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request, TextMessage

from runtime.streaming import PortForwardRequest, RemoteCommandRequest, StreamingServer, spdy
from runtime.streaming.channels import Outcome
from runtime.streaming.session import RemoteStreams


@pytest.fixture
async def server() -> AsyncIterator[StreamingServer]:
    s = StreamingServer("127.0.0.1", 0, idle_timeout=30, creation_timeout=2)
    await s.start()
    try:
        yield s
    finally:
        await s.close()


async def echo_then_exit(streams: RemoteStreams) -> Outcome:
    """Writes stdin back to stdout (and its length to stderr), resizes as text, exits 3."""
    assert streams.stdin is not None and streams.stdout is not None
    total = 0
    while data := await streams.stdin.read():
        total += len(data)
        await streams.stdout.write(data)
    if streams.stderr is not None:
        await streams.stderr.write(f"{total}".encode())
    return Outcome(exit_code=3)


async def upgrade(url: str, headers: list[tuple[str, str]], method: str = "POST"
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Response | h11.InformationalResponse, bytes]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    http = h11.Connection(h11.CLIENT)
    writer.write(http.send(h11.Request(method=method, target=parts.path, headers=[
        ("Host", parts.netloc), *headers])))
    if method == "POST":
        writer.write(http.send(h11.EndOfMessage()))
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(65536))
            continue
        if isinstance(event, (h11.Response, h11.InformationalResponse)):
            if event.status_code == 101:
                return reader, writer, event, http.trailing_data[0]
            body = b""
            while not isinstance(ev := http.next_event(), h11.EndOfMessage):
                if ev is h11.NEED_DATA:
                    http.receive_data(await reader.read(65536))
                elif isinstance(ev, h11.Data):
                    body += ev.data
            writer.close()
            return reader, writer, event, body


SPDY_HEADERS = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
                ("X-Stream-Protocol-Version", "v3.channel.k8s.io")]


class SpdyClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pending: bytes) -> None:
        self.reader, self.writer = reader, writer
        self.conn = spdy.Connection(client=True)
        self.pending = pending
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.events: list[spdy.Event] = []

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def pump_until(self, done: "callable[[], bool]", timeout: float = 5) -> None:   # type: ignore[valid-type]
        async def loop() -> None:
            while not done():   # type: ignore[operator]
                data, self.pending = (self.pending, b"") if self.pending else (await self.reader.read(65536), b"")
                if not data:
                    return
                for e in self.conn.receive_data(data):
                    self.events.append(e)
                    if isinstance(e, spdy.DataReceived):
                        self.data.setdefault(e.stream_id, bytearray()).extend(e.data)
                    elif isinstance(e, spdy.StreamEnded):
                        self.ended.add(e.stream_id)
                self.flush()
        await asyncio.wait_for(loop(), timeout)

    def goaway(self) -> bool:
        return any(isinstance(e, spdy.GoAwayReceived) for e in self.events)


async def test_exec_over_spdy_v4(server: StreamingServer) -> None:
    url = server.url(RemoteCommandRequest("exec", echo_then_exit, True, True, True, False))
    reader, writer, response, pending = await upgrade(url, SPDY_HEADERS)
    assert response.status_code == 101
    assert (b"x-stream-protocol-version", b"v4.channel.k8s.io") in response.headers
    c = SpdyClient(reader, writer, pending)
    ids = {kind: c.conn.open_stream({"streamtype": kind}) for kind in ("error", "stdin", "stdout", "stderr")}
    c.flush()
    await c.pump_until(lambda: sum(isinstance(e, spdy.StreamReplied) for e in c.events) == 4)
    payload = os.urandom(300_000)
    c.conn.send_data(ids["stdin"], payload, fin=True)
    c.flush()
    await c.pump_until(c.goaway)
    assert bytes(c.data[ids["stdout"]]) == payload
    assert bytes(c.data[ids["stderr"]]) == b"300000"
    status = json.loads(c.data[ids["error"]])
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "3"
    assert {ids["stdout"], ids["stderr"], ids["error"]} <= c.ended
    writer.close()


async def test_tokens_are_single_use(server: StreamingServer) -> None:
    url = server.url(RemoteCommandRequest("exec", echo_then_exit, True, True, False, False))
    await upgrade(url, SPDY_HEADERS)
    _, _, response, body = await upgrade(url, SPDY_HEADERS)
    assert response.status_code == 404 and b"token" in body
    _, _, response, _ = await upgrade(url.replace("/exec/", "/attach/"), SPDY_HEADERS)
    assert response.status_code == 404


async def test_a_refused_request_leaves_the_token_usable(server: StreamingServer) -> None:
    """Only a request of the token's own kind with a valid upgrade takes it: a stray or malformed
    request (a probe, a client retrying with other headers) must not spend the kubelet's token."""
    url = server.url(RemoteCommandRequest("exec", echo_then_exit, True, True, False, False))
    ws_bad_version = [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "8"),
                      ("Sec-WebSocket-Protocol", "v5.channel.k8s.io")]
    ws_no_common_protocol = [*ws_bad_version[:3], ("Sec-WebSocket-Version", "13"),
                             ("Sec-WebSocket-Protocol", "v9.channel.k8s.io")]
    refusals: list[tuple[str, list[tuple[str, str]], str, int]] = [
        (url.replace("/exec/", "/attach/"), SPDY_HEADERS, "POST", 404),
        (url.replace("/exec/", "/portforward/"), SPDY_HEADERS, "POST", 404),
        (url, SPDY_HEADERS, "PUT", 405),
        (url, [], "GET", 400),                                                      # no upgrade at all
        (url, [("Connection", "keep-alive"), ("Upgrade", "SPDY/3.1")], "POST", 400),  # no Connection: Upgrade
        (url, [("Connection", "Upgrade"), ("Upgrade", "h2c")], "POST", 400),          # unsupported upgrade
        (url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")], "POST", 400),     # no protocol offered
        (url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
               ("X-Stream-Protocol-Version", "v9.channel.k8s.io")], "POST", 403),    # none we speak
        (url, ws_bad_version, "GET", 400),
        (url, ws_no_common_protocol, "GET", 400),
    ]
    for target, headers, method, status in refusals:
        _, _, response, _ = await upgrade(target, headers, method=method)
        assert response.status_code == status, (target, headers, method)
        assert len(server.tokens) == 1, (target, headers, method)
    reader, writer, response, _ = await upgrade(url, SPDY_HEADERS)
    assert response.status_code == 101
    writer.close()
    assert len(server.tokens) == 0
    _, _, response, _ = await upgrade(url, SPDY_HEADERS)
    assert response.status_code == 404


async def test_refusals(server: StreamingServer) -> None:
    def fresh() -> str:
        return server.url(RemoteCommandRequest("exec", echo_then_exit, True, True, False, False))
    _, _, response, _ = await upgrade(fresh(), [], method="GET")
    assert response.status_code == 400
    _, _, response, _ = await upgrade(fresh(), [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
                                                 ("X-Stream-Protocol-Version", "v9.channel.k8s.io")])
    assert response.status_code == 403
    assert (b"x-accepted-stream-protocol-versions", b"v4.channel.k8s.io") in response.headers


async def test_missing_streams_time_out_and_malformed_frames_close(server: StreamingServer) -> None:
    ran = asyncio.Event()

    async def never(streams: RemoteStreams) -> Outcome:
        ran.set()
        return Outcome()
    url = server.url(RemoteCommandRequest("exec", never, True, True, False, False))
    reader, writer, _, _ = await upgrade(url, SPDY_HEADERS)
    # no streams within creation_timeout: GOAWAY and the connection closes
    assert spdy.FrameReader().feed(await asyncio.wait_for(reader.read(), 5)) == [spdy.GoAway(0, spdy.GOAWAY_OK)]
    assert not ran.is_set()
    writer.close()
    # garbage after the upgrade: GOAWAY(PROTOCOL_ERROR), then the connection closes
    url = server.url(RemoteCommandRequest("exec", never, True, True, False, False))
    reader, writer, _, _ = await upgrade(url, SPDY_HEADERS)
    writer.write(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")
    rest = await asyncio.wait_for(reader.read(), 5)
    assert spdy.FrameReader().feed(rest) == [spdy.GoAway(0, spdy.GOAWAY_PROTOCOL_ERROR)]
    writer.close()
    await asyncio.sleep(0)
    assert not ran.is_set()


async def test_client_going_away_ends_the_command(server: StreamingServer) -> None:
    saw_gone = asyncio.Event()

    async def waits(streams: RemoteStreams) -> Outcome:
        await streams.gone.wait()
        saw_gone.set()
        return Outcome()
    url = server.url(RemoteCommandRequest("exec", waits, False, True, False, False))
    reader, writer, _, pending = await upgrade(url, SPDY_HEADERS)
    c = SpdyClient(reader, writer, pending)
    c.conn.open_stream({"streamtype": "error"})
    c.conn.open_stream({"streamtype": "stdout"})
    c.flush()
    await c.pump_until(lambda: len(c.events) == 2)
    writer.close()
    await asyncio.wait_for(saw_gone.wait(), 5)


async def test_idle_sessions_time_out() -> None:
    s = StreamingServer("127.0.0.1", 0, idle_timeout=0.3)
    await s.start()
    try:
        gone = asyncio.Event()

        async def waits(streams: RemoteStreams) -> Outcome:
            await streams.gone.wait()
            gone.set()
            return Outcome()
        url = s.url(RemoteCommandRequest("exec", waits, False, True, False, False))
        reader, writer, _, pending = await upgrade(url, SPDY_HEADERS)
        c = SpdyClient(reader, writer, pending)
        c.conn.open_stream({"streamtype": "error"})
        c.conn.open_stream({"streamtype": "stdout"})
        c.flush()
        await asyncio.wait_for(gone.wait(), 5)
        writer.close()
    finally:
        await s.close()


def ws_handshake(url: str, protocols: list[str]) -> tuple[WSConnection, bytes]:
    ws = WSConnection(ConnectionType.CLIENT)
    parts = urlsplit(url)
    return ws, ws.send(Request(host=parts.netloc, target=parts.path, subprotocols=protocols))


async def ws_session(url: str, protocols: list[str], send: list[bytes | str]
                     ) -> tuple[str | None, list[bytes | str]]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    ws, hello = ws_handshake(url, protocols)
    writer.write(hello)
    messages: list[bytes | str] = []
    protocol = None
    partial: list[bytes | str] = []
    while True:
        data = await asyncio.wait_for(reader.read(65536), 5)
        ws.receive_data(data or None)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                protocol = event.subprotocol
                for m in send:
                    writer.write(ws.send(TextMessage(data=m) if isinstance(m, str) else BytesMessage(data=m)))
            elif isinstance(event, (BytesMessage, TextMessage)):
                partial.append(event.data)
                if event.message_finished:
                    messages.append(b"".join(partial) if isinstance(event, BytesMessage) else "".join(partial))
                    partial = []
            elif isinstance(event, CloseConnection):
                assert event.code == 1000
                writer.write(ws.send(event.response()))
                writer.close()
                return protocol, messages
        if not data:
            return protocol, messages


async def test_exec_over_websocket_v5(server: StreamingServer) -> None:
    url = server.url(RemoteCommandRequest("exec", echo_then_exit, True, True, True, False))
    protocol, messages = await ws_session(url, ["v5.channel.k8s.io", "v4.channel.k8s.io"],
                                          [b"\x00hello ", b"\x00world", b"\xff\x00"])
    assert protocol == "v5.channel.k8s.io"
    assert messages[0] == b"\x01"   # the empty message announcing the session
    out = b"".join(m[1:] for m in messages if isinstance(m, bytes) and m[0] == 1)
    assert out == b"hello world"
    assert b"\x0211" in messages
    status = json.loads([m for m in messages if isinstance(m, bytes) and m[0] == 3][0][1:])
    assert status["details"]["causes"][0]["message"] == "3"


async def test_exec_over_websocket_base64(server: StreamingServer) -> None:
    async def hello(streams: RemoteStreams) -> Outcome:
        assert streams.stdout is not None
        await streams.stdout.write(b"hi")
        return Outcome()
    url = server.url(RemoteCommandRequest("exec", hello, False, True, False, False))
    protocol, messages = await ws_session(url, ["v4.base64.channel.k8s.io"], [])
    assert protocol == "v4.base64.channel.k8s.io"
    assert "1" + base64.b64encode(b"hi").decode() in messages
    assert json.loads(base64.b64decode([m for m in messages if m[0] == "3"][0][1:]))["status"] == "Success"


async def echo_server() -> tuple[asyncio.base_events.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def dial_local(port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


async def test_port_forward_pairs_over_spdy(server: StreamingServer) -> None:
    srv, port = await echo_server()
    try:
        url = server.url(PortForwardRequest(dial_local, (port,)))
        reader, writer, response, pending = await upgrade(url, [
            ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "portforward.k8s.io")])
        assert response.status_code == 101
        c = SpdyClient(reader, writer, pending)
        pairs = []
        for rid in range(3):
            headers = {"port": str(port), "requestid": str(rid)}
            err = c.conn.open_stream({**headers, "streamtype": "error"}, fin=True)
            data = c.conn.open_stream({**headers, "streamtype": "data"})
            pairs.append((err, data, os.urandom(200_000)))
        # one to a closed port, reported on its error stream
        bad_err = c.conn.open_stream({"port": "1", "requestid": "9", "streamtype": "error"}, fin=True)
        c.conn.open_stream({"port": "1", "requestid": "9", "streamtype": "data"})
        c.flush()
        await c.pump_until(lambda: sum(isinstance(e, spdy.StreamReplied) for e in c.events) == 8)
        for _err, data, payload in pairs:
            c.conn.send_data(data, payload, fin=True)
        c.flush()
        await c.pump_until(lambda: all(err in c.ended for err, _, _ in pairs) and bad_err in c.ended)
        for _err, data, payload in pairs:
            assert bytes(c.data[data]) == payload
        assert b"error forwarding port 1" in bytes(c.data[bad_err])
        writer.close()
    finally:
        srv.close()
