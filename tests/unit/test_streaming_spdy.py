"""The SPDY/3.1 framing and connection state machine, without sockets."""

from __future__ import annotations

import struct
import zlib

import pytest

from runtime.streaming import spdy


def pair() -> tuple[spdy.Connection, spdy.Connection]:
    return spdy.Connection(client=True), spdy.Connection(client=False)


def deliver(src: spdy.Connection, dst: spdy.Connection) -> list[spdy.Event]:
    return dst.receive_data(src.data_to_send())


def test_dictionary_is_the_spdy3_one() -> None:
    # Length and Adler-32 of the dictionary in the SPDY/3 draft (zlib stores the Adler-32
    # in the stream header; a different dictionary fails to decompress a peer's headers).
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2


def test_streams_open_reply_carry_data_and_end() -> None:
    client, server = pair()
    sid = client.open_stream({"streamtype": "stdout", "port": ["80", "81"]})
    assert sid == 1
    [opened] = deliver(client, server)
    assert opened == spdy.StreamOpened(1, {"streamtype": ["stdout"], "port": ["80", "81"]}, False)
    server.reply(1)
    assert deliver(server, client) == [spdy.StreamReplied(1, {})]
    server.send_data(1, b"x" * (spdy.DATA_CHUNK + 10))
    server.end_stream(1)
    events = deliver(server, client)
    assert b"".join(e.data for e in events if isinstance(e, spdy.DataReceived)) == b"x" * (spdy.DATA_CHUNK + 10)
    assert events[-1] == spdy.StreamEnded(1)
    # Header compression state carries over between frames (one zlib stream per direction).
    client.open_stream({"streamtype": "stdout"})
    assert deliver(client, server)[0].headers == {"streamtype": ["stdout"]}


def test_input_in_any_pieces() -> None:
    client, server = pair()
    client.open_stream({"a": "b"})
    client.send_data(1, b"hello", fin=True)
    wire = client.data_to_send()
    events = []
    for i in range(len(wire)):
        events += server.receive_data(wire[i:i + 1])
    assert [type(e) for e in events] == [spdy.StreamOpened, spdy.DataReceived, spdy.StreamEnded]


def test_pings_from_the_peer_are_echoed_and_goaway_is_reported() -> None:
    client, server = pair()
    client.ping(7)
    assert deliver(client, server) == []
    assert spdy.FrameReader().feed(server.data_to_send()) == [spdy.Ping(7)]
    server.goaway()
    assert deliver(server, client) == [spdy.GoAwayReceived(0, spdy.GOAWAY_OK)]


def test_reset_and_data_for_unknown_streams() -> None:
    client, server = pair()
    client.open_stream({})
    deliver(client, server)
    client.reset_stream(1)
    assert deliver(client, server) == [spdy.StreamReset(1, spdy.RST_CANCEL)]
    # data for a stream that was never opened: RST_STREAM(INVALID_STREAM)
    server.receive_data(spdy.FrameWriter.data(9, b"x"))
    assert spdy.FrameReader().feed(server.data_to_send()) == [spdy.RstStream(9, spdy.RST_INVALID_STREAM)]
    # late data for a stream gone already: dropped
    assert server.receive_data(spdy.FrameWriter.data(1, b"x")) == []
    assert server.data_to_send() == b""


def test_data_after_fin_resets_the_stream() -> None:
    client, server = pair()
    client.open_stream({}, fin=True)
    deliver(client, server)
    events = server.receive_data(spdy.FrameWriter.data(1, b"late"))
    assert events == [spdy.StreamReset(1, spdy.RST_STREAM_ALREADY_CLOSED)]


def test_settings_and_window_update_are_accepted() -> None:
    w = spdy.FrameWriter()
    frames = spdy.FrameReader().feed(w.settings([(0, 7, 65536)]) + w.window_update(1, 100))
    assert frames == [spdy.Settings(((0, 7, 65536),)), spdy.WindowUpdate(1, 100)]


def control(frame_type: int, payload: bytes, version: int = 3, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, frame_type, (flags << 24) | len(payload)) + payload


MALFORMED = {
    "wrong version": control(spdy.PING, b"\0\0\0\1", version=2),
    "short ping": control(spdy.PING, b"\0\0\1"),
    "short rst": control(spdy.RST_STREAM, b"\0\0\0\1"),
    "short goaway": control(spdy.GOAWAY, b"\0\0\0\1"),
    "settings count lies": control(spdy.SETTINGS, struct.pack(">I", 3) + b"\0" * 8),
    "syn_stream too short": control(spdy.SYN_STREAM, b"\0\0\0\1"),
    "syn_stream stream 0": control(spdy.SYN_STREAM, b"\0" * 10),
    "header block not zlib": control(spdy.SYN_STREAM, struct.pack(">IIBB", 1, 0, 0, 0) + b"garbage!"),
    "data on stream 0": struct.pack(">II", 0, 1) + b"x",
    "huge control frame": struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, spdy.MAX_CONTROL_FRAME + 1),
}


@pytest.mark.parametrize("wire", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_frames_are_protocol_errors(wire: bytes) -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.Connection().receive_data(wire)


def header_block_frame(raw_block: bytes, stream_id: int = 1) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS, zdict=spdy.DICTIONARY)
    block = c.compress(raw_block) + c.flush(zlib.Z_SYNC_FLUSH)
    return control(spdy.SYN_STREAM, struct.pack(">IIBB", stream_id, 0, 0, 0) + block)


BAD_BLOCKS = {
    "truncated": struct.pack(">I", 1) + struct.pack(">I", 10) + b"abc",
    "upper case name": struct.pack(">II", 1, 1) + b"A" + struct.pack(">I", 0),
    "duplicate": (struct.pack(">II", 2, 1) + b"a" + struct.pack(">I", 0)) + struct.pack(">I", 1) + b"a"
                 + struct.pack(">I", 0),
    "empty name": struct.pack(">II", 1, 0) + struct.pack(">I", 0),
    "too many": struct.pack(">I", spdy.MAX_HEADERS + 1),
    "trailing bytes": struct.pack(">I", 0) + b"x",
}


@pytest.mark.parametrize("block", BAD_BLOCKS.values(), ids=BAD_BLOCKS.keys())
def test_malformed_header_blocks_are_protocol_errors(block: bytes) -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.Connection().receive_data(header_block_frame(block))


def test_a_decompression_bomb_is_refused() -> None:
    block = struct.pack(">II", 1, 1) + b"a" + struct.pack(">I", 4 << 20) + b"\0" * (4 << 20)
    with pytest.raises(spdy.ProtocolError):
        spdy.Connection().receive_data(header_block_frame(block))


def test_stream_ids_must_increase_and_have_the_clients_parity() -> None:
    w = spdy.FrameWriter()
    server = spdy.Connection()
    server.receive_data(w.syn_stream(3, {}))
    with pytest.raises(spdy.ProtocolError, match="does not increase"):
        server.receive_data(w.syn_stream(1, {}))
    with pytest.raises(spdy.ProtocolError, match="parity"):
        spdy.Connection().receive_data(spdy.FrameWriter().syn_stream(2, {}))


def test_a_truncated_frame_waits_for_more() -> None:
    wire = spdy.FrameWriter.data(1, b"abcdef")
    assert spdy.FrameReader().feed(wire[:-1]) == []


def test_unknown_control_frames_are_ignored() -> None:
    assert spdy.FrameReader().feed(control(0x55, b"whatever")) == []


def test_streams_opened_after_goaway_are_refused() -> None:
    client, server = pair()
    server.goaway()
    server.data_to_send()
    client.open_stream({})
    assert deliver(client, server) == []
    assert spdy.FrameReader().feed(server.data_to_send()) == [spdy.RstStream(1, spdy.RST_REFUSED_STREAM)]
