"""Channel protocol pieces: negotiation, the error stream, resizes, WebSocket framing, tokens."""

from __future__ import annotations

import json

import pytest

from runtime import errors
from runtime.streaming import channels as ch
from runtime.streaming.tokens import TokenCache


def test_negotiation_follows_the_clients_order() -> None:
    assert ch.negotiate(["v4.channel.k8s.io, v3.channel.k8s.io"], ch.SPDY_REMOTE_COMMAND) == ch.SPDY_V4
    assert ch.negotiate(["v3.channel.k8s.io", "v4.channel.k8s.io"], ch.SPDY_REMOTE_COMMAND) == ch.SPDY_V3
    assert ch.negotiate(["v9.channel.k8s.io"], ch.SPDY_REMOTE_COMMAND) is None


def test_error_stream_v4_is_a_status_with_the_exit_code() -> None:
    assert json.loads(ch.status_bytes(ch.Outcome(), 4)) == {"metadata": {}, "status": "Success"}
    doc = json.loads(ch.status_bytes(ch.Outcome(exit_code=3), 4))
    assert doc["status"] == "Failure" and doc["reason"] == "NonZeroExitCode"
    assert doc["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    doc = json.loads(ch.status_bytes(ch.Outcome(error="runc failed"), 4))
    assert doc["status"] == "Failure" and doc["message"] == "runc failed" and doc["reason"] == "InternalError"


def test_error_stream_before_v4_is_a_message_or_nothing() -> None:
    assert ch.status_bytes(ch.Outcome(), 1) == b""
    assert b"exit status 2" in ch.status_bytes(ch.Outcome(exit_code=2), 1)
    assert ch.status_version(ch.SPDY_V3) == 1 and ch.status_version(ch.WS_V5) == 4


def test_resizes_arrive_in_any_pieces() -> None:
    d = ch.ResizeDecoder()
    assert d.feed(b'{"Width":80,') == []
    assert d.feed(b'"Height":24}\n{"Width":100,"Height":30}\n') == [(80, 24), (100, 30)]
    assert d.feed(b'{"Width":0,"Height":30}\n') == []   # out of range: dropped
    with pytest.raises(ch.ChannelError):
        d.feed(b"[1,2]\n")
    with pytest.raises(ch.ChannelError):
        ch.ResizeDecoder().feed(b"{" + b" " * 5000 + b"x")


def test_websocket_binary_and_base64_channels() -> None:
    v5 = ch.WsCodec(ch.WS_V5)
    assert v5.encode(1, b"hi") == b"\x01hi"
    assert v5.decode(b"\x00abc") == (0, b"abc")
    assert v5.decode(b"\xff\x00") == (0, None)   # v5 half-close of stdin
    with pytest.raises(ch.ChannelError):
        v5.decode(b"\xff\x00\x01")
    with pytest.raises(ch.ChannelError):
        v5.decode(b"")
    with pytest.raises(ch.ChannelError):
        v5.decode("0aGk=")
    assert ch.WsCodec(ch.WS_V4).decode(b"\xff\x00") == (255, b"\x00")   # no half-close before v5
    b64 = ch.WsCodec(ch.WS_V4_BASE64)
    assert b64.encode(2, b"hi") == "2aGk="
    assert b64.decode("0aGk=") == (0, b"hi")
    for bad in ("0!!!", "x", b"\x00"):
        with pytest.raises(ch.ChannelError):
            b64.decode(bad)


def test_tokens_are_single_use_expire_and_are_capped() -> None:
    now = [0.0]
    cache: TokenCache[str] = TokenCache(ttl=10, max_in_flight=2, clock=lambda: now[0])
    a = cache.issue("a")
    assert cache.consume(a) == "a"
    assert cache.consume(a) is None
    b, _c = cache.issue("b"), cache.issue("c")
    with pytest.raises(errors.ResourceExhausted):
        cache.issue("d")
    now[0] = 11
    assert cache.consume(b) is None and len(cache) == 0
    cache.issue("e")
