"""The Kubernetes remote command and port-forward protocols above the transport, sans-IO.

Remote command (exec, attach) carries up to five streams: stdin, stdout, stderr, the error
stream and terminal resizes. Over SPDY each is a stream named by its ``streamtype`` header;
over WebSocket each is a channel, the first byte of every message (the ``base64`` protocols
put it as an ASCII digit and base64 the rest, in text messages). ``v5.channel.k8s.io`` adds
the half-close: the message ``[255, channel]`` ends that channel.

The error stream ends the session: nothing for success in protocols before v4, a
``metav1.Status`` as JSON from v4 on, where a non-zero exit is reason ``NonZeroExitCode``
with the code in a cause of type ``ExitCode``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass

# SPDY protocol versions (X-Stream-Protocol-Version), the preferred first.
SPDY_V4, SPDY_V3, SPDY_V2, SPDY_V1 = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                                      "channel.k8s.io")
SPDY_REMOTE_COMMAND = (SPDY_V4, SPDY_V3, SPDY_V2, SPDY_V1)
PORT_FORWARD = "portforward.k8s.io"
SPDY_TUNNEL_PREFIX = "SPDY/3.1+"   # WebSocket subprotocol carrying a SPDY connection

# WebSocket subprotocols (Sec-WebSocket-Protocol) for remote command.
WS_V5 = "v5.channel.k8s.io"
WS_V4 = "v4.channel.k8s.io"
WS_V4_BASE64 = "v4.base64.channel.k8s.io"
WS_V1 = "channel.k8s.io"
WS_V1_BASE64 = "base64.channel.k8s.io"
WS_REMOTE_COMMAND = (WS_V5, WS_V4, WS_V4_BASE64, WS_V1, WS_V1_BASE64)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
STREAM_TYPES = {"stdin": STDIN, "stdout": STDOUT, "stderr": STDERR, "error": ERROR, "resize": RESIZE}
CLOSE_SIGNAL = 255

NON_ZERO_EXIT = "NonZeroExitCode"


class ChannelError(Exception):
    """A message of the channel protocol that cannot be understood."""


def negotiate(offered: Iterable[str], supported: Iterable[str]) -> str | None:
    """The first protocol the client offered that this side speaks (the client's order
    wins, as in the kubelet); values may be comma-separated lists."""
    ours = list(supported)
    for value in offered:
        for proto in (p.strip() for p in value.split(",")):
            if proto and proto in ours:
                return proto
    return None


def status_version(protocol: str) -> int:
    """4 for protocols that write a JSON Status on the error stream, 1 for the older ones."""
    return 4 if protocol in (SPDY_V4, WS_V4, WS_V4_BASE64, WS_V5) else 1


@dataclass(frozen=True)
class Outcome:
    """How a remote command ended: an exit code, or an error of the runtime."""
    exit_code: int = 0
    error: str | None = None

    def message(self) -> str:
        if self.error is not None:
            return self.error
        return f"command terminated with non-zero exit code: exit status {self.exit_code}"


def status_bytes(outcome: Outcome, version: int) -> bytes:
    """What goes on the error stream for `outcome` (may be empty)."""
    success = outcome.error is None and outcome.exit_code == 0
    if version < 4:
        return b"" if success else outcome.message().encode()
    if success:
        doc: dict[str, object] = {"metadata": {}, "status": "Success"}
    elif outcome.error is None:
        doc = {"metadata": {}, "status": "Failure", "message": outcome.message(), "reason": NON_ZERO_EXIT,
               "details": {"causes": [{"reason": "ExitCode", "message": str(outcome.exit_code & 0xFF)}]}}
    else:
        doc = {"metadata": {}, "status": "Failure", "message": outcome.error, "reason": "InternalError",
               "details": {"causes": [{"message": outcome.error}]}, "code": 500}
    return json.dumps(doc, separators=(",", ":")).encode()


class ResizeDecoder:
    """Terminal sizes from the resize stream: JSON objects ``{"Width": w, "Height": h}``
    back to back (client-go's json.Encoder puts a newline after each)."""

    MAX_PENDING = 4096

    def __init__(self) -> None:
        self._buf = ""
        self._json = json.JSONDecoder()

    def feed(self, data: bytes) -> list[tuple[int, int]]:
        """(width, height) pairs; sizes out of range are dropped."""
        self._buf += data.decode(errors="replace")
        sizes: list[tuple[int, int]] = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return sizes
            try:
                doc, end = self._json.raw_decode(text)
            except json.JSONDecodeError:
                if len(text) > self.MAX_PENDING:
                    raise ChannelError("resize stream: not a terminal size") from None
                self._buf = text
                return sizes
            self._buf = text[end:]
            if not isinstance(doc, dict):
                raise ChannelError("resize stream: not a terminal size")
            width, height = doc.get("Width", doc.get("width")), doc.get("Height", doc.get("height"))
            if isinstance(width, int) and isinstance(height, int) and 0 < width < 65536 and 0 < height < 65536:
                sizes.append((width, height))


@dataclass(frozen=True)
class WsCodec:
    """Channel framing of one negotiated WebSocket subprotocol."""
    protocol: str

    @property
    def base64(self) -> bool:
        return "base64" in self.protocol

    @property
    def half_close(self) -> bool:
        return self.protocol == WS_V5

    def encode(self, channel: int, data: bytes) -> bytes | str:
        if self.base64:
            return chr(ord("0") + channel) + base64.b64encode(data).decode()
        return bytes([channel]) + data

    def decode(self, message: bytes | str) -> tuple[int, bytes | None]:
        """(channel, data); data None is the v5 half-close of that channel."""
        if isinstance(message, str):
            if not self.base64:
                raise ChannelError("text message on a binary channel protocol")
            if not message:
                raise ChannelError("empty message")
            channel = ord(message[0]) - ord("0")
            if not 0 <= channel <= 9:
                raise ChannelError(f"bad channel {message[0]!r}")
            try:
                return channel, base64.b64decode(message[1:], validate=True)
            except (binascii.Error, ValueError):
                raise ChannelError("message is not base64") from None
        if self.base64:
            raise ChannelError("binary message on a base64 channel protocol")
        if not message:
            raise ChannelError("empty message")
        if self.half_close and message[0] == CLOSE_SIGNAL:
            if len(message) != 2:
                raise ChannelError("a close signal names exactly one channel")
            return message[1], None
        return message[0], bytes(message[1:])
