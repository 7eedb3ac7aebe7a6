"""SPDY/3.1 framing, sans-IO: bytes in, events out; calls in, bytes out.

Only what Kubernetes streaming uses (client-go through moby/spdystream) is modelled, but
every frame of the spec is parsed and checked, so a malformed peer gets a protocol error
(`ProtocolError`, to be answered with GOAWAY) instead of a crash or a hang:

    control frame:  1 | version(15) | type(16) | flags(8) | length(24) | payload
    data frame:     0 | stream id(31) | flags(8) | length(24) | payload

Header blocks are zlib streams, one per direction for the whole connection, primed with
the SPDY/3 dictionary and flushed with Z_SYNC_FLUSH after every block. A block is
``count(32) {name-len(32) name value-len(32) value}``; names are lower case, several values
of one name are joined by NUL.

Flow control: spdystream neither sends WINDOW_UPDATE nor honours it, so windows are not
enforced here either; WINDOW_UPDATE and SETTINGS are parsed and ignored.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes
RST_PROTOCOL_ERROR = 1
RST_INVALID_STREAM = 2
RST_REFUSED_STREAM = 3
RST_UNSUPPORTED_VERSION = 4
RST_CANCEL = 5
RST_INTERNAL_ERROR = 6
RST_STREAM_IN_USE = 8
RST_STREAM_ALREADY_CLOSED = 9

# GOAWAY status codes
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

MAX_LENGTH = (1 << 24) - 1
MAX_CONTROL_FRAME = 1 << 20      # a control frame bigger than this is refused
MAX_HEADER_BLOCK = 1 << 20       # decompressed header block
MAX_HEADERS = 1000
DATA_CHUNK = 32 * 1024           # the largest data frame this side sends

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status").split() + ["200 OK"] + \
    "version HTTP/1.1 url public set-cookie keep-alive origin".split()
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.")

# The zlib dictionary of SPDY/3 header compression: the well-known header words, each
# with a 32-bit length in front, then status lines, dates and media types as they are.
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = dict[str, list[str]]


class ProtocolError(Exception):
    """The peer broke the framing: the connection ends with GOAWAY(PROTOCOL_ERROR)."""


# ---- frames -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers
    fin: bool = False
    unidirectional: bool = False
    associated_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...]   # (flags, id, value)
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    stream_id: int
    data: bytes
    fin: bool = False


Frame = SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data

_CONTROL = struct.Struct(">HHI")   # 0x8000|version, type, flags<<24|length
_DATA = struct.Struct(">II")       # stream id, flags<<24|length
_U32 = struct.Struct(">I")


def _header_block(headers: Mapping[str, str | Iterable[str]]) -> bytes:
    out = [_U32.pack(len(headers))]
    for name, value in headers.items():
        raw_name = name.lower().encode()
        raw_value = (value if isinstance(value, str) else "\0".join(value)).encode()
        out += [_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value]
    return b"".join(out)


def _parse_header_block(block: bytes) -> Headers:
    def take(offset: int, n: int) -> bytes:
        if offset + n > len(block):
            raise ProtocolError("header block is truncated")
        return block[offset:offset + n]

    (count,) = _U32.unpack(take(0, 4))
    if count > MAX_HEADERS:
        raise ProtocolError(f"header block has {count} headers, more than {MAX_HEADERS}")
    headers: Headers = {}
    pos = 4
    for _ in range(count):
        (n,) = _U32.unpack(take(pos, 4))
        name_raw = take(pos + 4, n)
        pos += 4 + n
        (n,) = _U32.unpack(take(pos, 4))
        value_raw = take(pos + 4, n)
        pos += 4 + n
        try:
            name, value = name_raw.decode(), value_raw.decode()
        except UnicodeDecodeError:
            raise ProtocolError("header name or value is not UTF-8") from None
        if not name:
            raise ProtocolError("empty header name")
        if name != name.lower():
            raise ProtocolError(f"header name {name!r} is not lower case")
        if name in headers:
            raise ProtocolError(f"header {name!r} appears twice")
        headers[name] = value.split("\0")
    if pos != len(block):
        raise ProtocolError("header block has trailing bytes")
    return headers


class FrameWriter:
    """Serialises frames; owns this direction's header compressor."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, zdict=DICTIONARY)

    def _compress(self, headers: Mapping[str, str | Iterable[str]]) -> bytes:
        raw = _header_block(headers)
        return self._compressor.compress(raw) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(frame_type: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_LENGTH:
            raise ValueError("control frame too long")
        return _CONTROL.pack(0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload

    @staticmethod
    def data(stream_id: int, data: bytes, fin: bool = False) -> bytes:
        if len(data) > MAX_LENGTH:
            raise ValueError("data frame too long")
        return _DATA.pack(stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data

    def syn_stream(self, stream_id: int, headers: Mapping[str, str | Iterable[str]], fin: bool = False,
                   priority: int = 0) -> bytes:
        payload = struct.pack(">IIBB", stream_id, 0, (priority & 7) << 5, 0) + self._compress(headers)
        return self.control(SYN_STREAM, FLAG_FIN if fin else 0, payload)

    def syn_reply(self, stream_id: int, headers: Mapping[str, str | Iterable[str]], fin: bool = False) -> bytes:
        return self.control(SYN_REPLY, FLAG_FIN if fin else 0, _U32.pack(stream_id) + self._compress(headers))

    def headers(self, stream_id: int, headers: Mapping[str, str | Iterable[str]], fin: bool = False) -> bytes:
        return self.control(HEADERS, FLAG_FIN if fin else 0, _U32.pack(stream_id) + self._compress(headers))

    def rst_stream(self, stream_id: int, status: int) -> bytes:
        return self.control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id: int) -> bytes:
        return self.control(PING, 0, _U32.pack(ping_id))

    def goaway(self, last_good_stream_id: int, status: int = GOAWAY_OK) -> bytes:
        return self.control(GOAWAY, 0, struct.pack(">II", last_good_stream_id, status))

    def window_update(self, stream_id: int, delta: int) -> bytes:
        return self.control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))

    def settings(self, entries: Iterable[tuple[int, int, int]]) -> bytes:
        items = list(entries)
        payload = _U32.pack(len(items)) + b"".join(
            _U32.pack((flags << 24) | ident) + _U32.pack(value) for flags, ident, value in items)
        return self.control(SETTINGS, 0, payload)


class FrameReader:
    """Parses frames from bytes fed in any pieces; owns the peer's header decompressor."""

    def __init__(self, max_control_frame: int = MAX_CONTROL_FRAME) -> None:
        self._buf = bytearray()
        self._max_control = max_control_frame
        self._decompressor = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            first, second = _U32.unpack_from(self._buf, 0)[0], _U32.unpack_from(self._buf, 4)[0]
            flags, length = second >> 24, second & 0xFFFFFF
            control = bool(first & 0x80000000)
            if control and length > self._max_control:
                raise ProtocolError(f"control frame of {length} bytes is too large")
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            if not control:
                if first == 0:
                    raise ProtocolError("data frame on stream 0")
                frames.append(Data(first, payload, bool(flags & FLAG_FIN)))
                continue
            version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise ProtocolError(f"unsupported SPDY version {version}")
            frame = self._control(frame_type, flags, payload)
            if frame is not None:
                frames.append(frame)
        return frames

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._decompressor.decompress(block, MAX_HEADER_BLOCK + 1)
        except zlib.error as e:
            raise ProtocolError(f"header block does not decompress: {e}") from None
        if len(raw) > MAX_HEADER_BLOCK or self._decompressor.unconsumed_tail:
            raise ProtocolError("header block is too large")
        return _parse_header_block(raw)

    @staticmethod
    def _need(payload: bytes, n: int, what: str, exact: bool = True) -> None:
        if len(payload) < n or (exact and len(payload) != n):
            raise ProtocolError(f"{what} frame has a payload of {len(payload)} bytes")

    def _control(self, frame_type: int, flags: int, payload: bytes) -> Frame | None:
        fin = bool(flags & FLAG_FIN)
        if frame_type == SYN_STREAM:
            self._need(payload, 10, "SYN_STREAM", exact=False)
            stream_id, assoc, prio = struct.unpack_from(">IIB", payload)
            stream_id &= 0x7FFFFFFF
            if stream_id == 0:
                raise ProtocolError("SYN_STREAM for stream 0")
            return SynStream(stream_id, self._headers(payload[10:]), fin, bool(flags & FLAG_UNIDIRECTIONAL),
                             assoc & 0x7FFFFFFF, prio >> 5)
        if frame_type in (SYN_REPLY, HEADERS):
            self._need(payload, 4, "SYN_REPLY" if frame_type == SYN_REPLY else "HEADERS", exact=False)
            stream_id = _U32.unpack_from(payload)[0] & 0x7FFFFFFF
            if stream_id == 0:
                raise ProtocolError("stream frame for stream 0")
            headers = self._headers(payload[4:])
            return SynReply(stream_id, headers, fin) if frame_type == SYN_REPLY else \
                HeadersFrame(stream_id, headers, fin)
        if frame_type == RST_STREAM:
            self._need(payload, 8, "RST_STREAM")
            stream_id, status = struct.unpack(">II", payload)
            return RstStream(stream_id & 0x7FFFFFFF, status)
        if frame_type == SETTINGS:
            self._need(payload, 4, "SETTINGS", exact=False)
            (count,) = _U32.unpack_from(payload)
            if len(payload) != 4 + 8 * count:
                raise ProtocolError(f"SETTINGS frame with {count} entries has {len(payload)} bytes")
            entries = []
            for i in range(count):
                word, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                entries.append((word >> 24, word & 0xFFFFFF, value))
            return Settings(tuple(entries), bool(flags & 0x01))
        if frame_type == PING:
            self._need(payload, 4, "PING")
            return Ping(_U32.unpack(payload)[0])
        if frame_type == GOAWAY:
            self._need(payload, 8, "GOAWAY")
            last, status = struct.unpack(">II", payload)
            return GoAway(last & 0x7FFFFFFF, status)
        if frame_type == WINDOW_UPDATE:
            self._need(payload, 8, "WINDOW_UPDATE")
            stream_id, delta = struct.unpack(">II", payload)
            return WindowUpdate(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return None   # unknown control frames are ignored, as the spec asks


# ---- the connection state machine ---------------------------------------------------------

@dataclass(frozen=True)
class StreamOpened:
    """The peer opened a stream (answer it with reply() or reset_stream())."""
    stream_id: int
    headers: Headers
    fin: bool


@dataclass(frozen=True)
class StreamReplied:
    """The peer accepted a stream this side opened."""
    stream_id: int
    headers: Headers


@dataclass(frozen=True)
class DataReceived:
    stream_id: int
    data: bytes


@dataclass(frozen=True)
class StreamEnded:
    """The peer will send nothing more on this stream (FIN)."""
    stream_id: int


@dataclass(frozen=True)
class StreamReset:
    stream_id: int
    status: int


@dataclass(frozen=True)
class GoAwayReceived:
    last_good_stream_id: int
    status: int


Event = StreamOpened | StreamReplied | DataReceived | StreamEnded | StreamReset | GoAwayReceived


@dataclass
class _Stream:
    local_closed: bool = False
    remote_closed: bool = False
    replied: bool = False


@dataclass
class Connection:
    """One side of a SPDY/3.1 connection. The server opens even stream ids, the client odd."""
    client: bool = False
    _reader: FrameReader = field(default_factory=FrameReader)
    _writer: FrameWriter = field(default_factory=FrameWriter)
    _out: bytearray = field(default_factory=bytearray)
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _last_remote_id: int = 0
    _next_local_id: int = 0
    _goaway_sent: bool = False

    def __post_init__(self) -> None:
        self._next_local_id = 1 if self.client else 2

    # ---- input ----

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for frame in self._reader.feed(data):
            self._handle(frame, events)
        return events

    def _remote_parity(self, stream_id: int) -> bool:
        return (stream_id % 2 == 0) if self.client else (stream_id % 2 == 1)

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        if isinstance(frame, SynStream):
            sid = frame.stream_id
            if not self._remote_parity(sid):
                raise ProtocolError(f"the peer opened stream {sid} with this side's parity")
            if sid <= self._last_remote_id:
                raise ProtocolError(f"stream id {sid} does not increase")
            self._last_remote_id = sid
            if self._goaway_sent:
                self._send(self._writer.rst_stream(sid, RST_REFUSED_STREAM))
                return
            self._streams[sid] = _Stream(remote_closed=frame.fin, local_closed=frame.unidirectional)
            events.append(StreamOpened(sid, frame.headers, frame.fin))
        elif isinstance(frame, SynReply):
            stream = self._streams.get(frame.stream_id)
            if stream is None or stream.replied:
                return
            stream.replied = True
            events.append(StreamReplied(frame.stream_id, frame.headers))
            if frame.fin:
                self._remote_fin(frame.stream_id, events)
        elif isinstance(frame, Data):
            self._data(frame, events)
        elif isinstance(frame, HeadersFrame):
            if frame.fin and frame.stream_id in self._streams:
                self._remote_fin(frame.stream_id, events)
        elif isinstance(frame, RstStream):
            if self._streams.pop(frame.stream_id, None) is not None:
                events.append(StreamReset(frame.stream_id, frame.status))
        elif isinstance(frame, Ping):
            if self._remote_parity(frame.ping_id):   # the peer's ping: echo it
                self._send(self._writer.ping(frame.ping_id))
        elif isinstance(frame, GoAway):
            events.append(GoAwayReceived(frame.last_good_stream_id, frame.status))
        # SETTINGS and WINDOW_UPDATE: flow control is not enforced (see the module docstring)

    def _data(self, frame: Data, events: list[Event]) -> None:
        sid = frame.stream_id
        stream = self._streams.get(sid)
        if stream is None:
            never_opened = sid > self._last_remote_id if self._remote_parity(sid) else sid >= self._next_local_id
            if never_opened:
                self._send(self._writer.rst_stream(sid, RST_INVALID_STREAM))
            return   # otherwise late data for a stream gone already: dropped
        if stream.remote_closed:
            self._streams.pop(sid, None)
            self._send(self._writer.rst_stream(sid, RST_STREAM_ALREADY_CLOSED))
            events.append(StreamReset(sid, RST_STREAM_ALREADY_CLOSED))
            return
        if frame.data:
            events.append(DataReceived(sid, frame.data))
        if frame.fin:
            self._remote_fin(sid, events)

    def _remote_fin(self, stream_id: int, events: list[Event]) -> None:
        stream = self._streams[stream_id]
        stream.remote_closed = True
        events.append(StreamEnded(stream_id))
        if stream.local_closed:
            del self._streams[stream_id]

    # ---- output ----

    def _send(self, data: bytes) -> None:
        self._out += data

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def open_stream(self, headers: Mapping[str, str | Iterable[str]], fin: bool = False) -> int:
        sid = self._next_local_id
        self._next_local_id += 2
        self._streams[sid] = _Stream(local_closed=fin)
        self._send(self._writer.syn_stream(sid, headers, fin))
        return sid

    def reply(self, stream_id: int, headers: Mapping[str, str | Iterable[str]] | None = None,
              fin: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.replied:
            return
        stream.replied = True
        self._send(self._writer.syn_reply(stream_id, headers or {}, fin))
        if fin:
            self._local_fin(stream_id, stream)

    def is_open(self, stream_id: int) -> bool:
        stream = self._streams.get(stream_id)
        return stream is not None and not stream.local_closed

    def send_data(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return   # reset by the peer meanwhile: dropped, as spdystream does
        view = memoryview(data)
        for start in range(0, len(view), DATA_CHUNK):
            chunk = view[start:start + DATA_CHUNK]
            self._send(self._writer.data(stream_id, bytes(chunk), fin and start + DATA_CHUNK >= len(view)))
        if not view and fin:
            self._send(self._writer.data(stream_id, b"", True))
        if fin:
            self._local_fin(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        self.send_data(stream_id, b"", fin=True)

    def _local_fin(self, stream_id: int, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._streams.pop(stream_id, None)

    def reset_stream(self, stream_id: int, status: int = RST_CANCEL) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self._send(self._writer.rst_stream(stream_id, status))

    def ping(self, ping_id: int) -> None:
        self._send(self._writer.ping(ping_id))

    def goaway(self, status: int = GOAWAY_OK) -> None:
        if not self._goaway_sent:
            self._goaway_sent = True
            self._send(self._writer.goaway(self._last_remote_id, status))
