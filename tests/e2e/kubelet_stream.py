"""`kubectl exec` and `kubectl port-forward` as an API server would run them: the
kubelet's own /exec (a WebSocket) and /portForward (SPDY) endpoints, which the
kubelet proxies to criservice's streaming server (the URL from the CRI Exec and
PortForward calls)."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.parse
from typing import Any

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, RejectData, Request,
)

from runtime.streaming import spdy

# Channel numbers of the Kubernetes WebSocket stream protocols.
STDIN, STDOUT, STDERR, STATUS, CLOSE = 0, 1, 2, 3, 255


def _tls(port: int, timeout: float) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the kubelet's self-signed serving cert
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout),
                           server_hostname="127.0.0.1")


class KubeletWebSocket:
    """A client WebSocket to the kubelet's TLS port; binary messages only."""

    def __init__(self, port: int, target: str, protocols: list[str], timeout: float = 30) -> None:
        self.sock = _tls(port, timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.deadline = time.monotonic() + timeout
        self.protocol: str | None = None
        self.messages: list[bytes] = []
        self.closed = False
        self._partial = b""
        self._rejected: list[Any] = []
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target=target, subprotocols=protocols)))
        self.pump(lambda: self.protocol is not None)

    def send(self, data: bytes) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data)))

    def pump(self, done: Any) -> None:
        """Read until `done()` or the peer closes; fail at the deadline."""
        while not done() and not self.closed:
            self.sock.settimeout(max(0.1, self.deadline - time.monotonic()))
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            for event in self.ws.events():
                self._handle(event)
            if not data:
                self.closed = True
        if self._rejected:
            status, body = self._rejected[0], b"".join(self._rejected[1:])
            raise AssertionError(f"the kubelet refused the upgrade: {status} {body!r}")

    def _handle(self, event: Any) -> None:
        if isinstance(event, AcceptConnection):
            self.protocol = event.subprotocol or ""
        elif isinstance(event, RejectConnection):
            self._rejected.append(event.status_code)
            self.closed = not event.has_body
        elif isinstance(event, RejectData):
            self._rejected.append(event.data)
            self.closed = event.body_finished
        elif isinstance(event, BytesMessage):
            self._partial += event.data
            if event.message_finished:
                self.messages.append(self._partial)
                self._partial = b""
        elif isinstance(event, Ping):
            self.sock.sendall(self.ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self.sock.sendall(self.ws.send(event.response()))
            self.closed = True

    def channel(self, number: int) -> bytes:
        return b"".join(m[1:] for m in self.messages if m and m[0] == number)

    def close(self) -> None:
        if not self.closed:
            try:
                self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
            except OSError:
                pass
        self.sock.close()


def kubelet_exec(port: int, pod: str, container: str, command: list[str], stdin: bytes | None = None,
                 namespace: str = "default") -> tuple[bytes, bytes, dict[str, Any]]:
    """(stdout, stderr, status) of a command run through the kubelet's /exec."""
    query = [("command", c) for c in command] + [("output", "1"), ("error", "1")]
    if stdin is not None:
        query.append(("input", "1"))
    target = f"/exec/{namespace}/{pod}/{container}?{urllib.parse.urlencode(query)}"
    ws = KubeletWebSocket(port, target, ["v5.channel.k8s.io"])
    try:
        assert ws.protocol == "v5.channel.k8s.io", ws.protocol
        if stdin is not None:
            ws.send(bytes([STDIN]) + stdin)
            ws.send(bytes([CLOSE, STDIN]))  # v5: end of input
        ws.pump(lambda: bool(ws.channel(STATUS)))
        return ws.channel(STDOUT), ws.channel(STDERR), json.loads(ws.channel(STATUS))
    finally:
        ws.close()


def kubelet_port_forward(port: int, pod: str, pod_port: int, request: bytes, until: bytes,
                         namespace: str = "default", timeout: float = 30) -> bytes:
    """Send `request` to `pod_port` of the pod through the kubelet's /portForward and
    return what comes back once it contains `until`. SPDY, as the API server speaks
    to kubelets (criservice's streaming server offers port-forward over SPDY only); the
    framing is criservice's own sans-IO SPDY module, playing the API server's part."""
    sock = _tls(port, timeout)
    http = h11.Connection(h11.CLIENT)
    sock.sendall(http.send(h11.Request(method="POST", target=f"/portForward/{namespace}/{pod}", headers=[
        ("Host", f"127.0.0.1:{port}"), ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "portforward.k8s.io"), ("Content-Length", "0")])))
    sock.sendall(http.send(h11.EndOfMessage()))
    while (event := http.next_event()) is h11.NEED_DATA:
        http.receive_data(sock.recv(65536))
    assert isinstance(event, h11.InformationalResponse) and event.status_code == 101, event
    conn = spdy.Connection(client=True)
    headers = {"port": str(pod_port), "requestid": "0"}
    error = conn.open_stream({**headers, "streamtype": "error"})
    data = conn.open_stream({**headers, "streamtype": "data"})
    conn.send_data(data, request)
    received: dict[int, bytes] = {data: b"", error: b""}
    pending = http.trailing_data[0]
    try:
        while until not in received[data] and not received[error]:
            sock.sendall(conn.data_to_send())
            chunk, pending = (pending, b"") if pending else (sock.recv(65536), b"")
            assert chunk, f"the kubelet closed the connection; so far {received}"
            for ev in conn.receive_data(chunk):
                if isinstance(ev, spdy.DataReceived):
                    received[ev.stream_id] = received.get(ev.stream_id, b"") + ev.data
        assert not received[error], f"port-forward error: {received[error]!r}"
        return received[data]
    finally:
        sock.close()
