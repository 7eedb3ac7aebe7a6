import json
import logging

from criservice.daemon_log import JsonFormatter, TextFormatter


def _record(msg: str, **fields: object) -> logging.LogRecord:
    r = logging.LogRecord("criservice.test", logging.INFO, __file__, 1, msg, None, None)
    r.fields = fields  # type: ignore[attr-defined]
    return r


def test_json_lines_carry_fields() -> None:
    doc = json.loads(JsonFormatter().format(_record("pod started", pod="web-1", ms=12.5)))
    assert doc["level"] == "info" and doc["msg"] == "pod started"
    assert doc["pod"] == "web-1" and doc["ms"] == 12.5
    assert doc["time"].endswith("Z")


def test_text_lines_quote_what_needs_it() -> None:
    line = TextFormatter().format(_record("request failed", method="Status", error="no such file"))
    assert 'msg="request failed"' in line
    assert "method=Status" in line
    assert 'error="no such file"' in line


def test_long_field_values_are_shortened_with_their_length() -> None:
    huge = "f" * 300_000
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(_record("request failed", method="Status", error=huge, ok="short"))
        assert len(line) < 2000, type(formatter).__name__
        assert "300000 bytes" in line and "ok=short" in line or '"ok": "short"' in line


def test_a_long_message_is_shortened() -> None:
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(_record("x" * 300_000))
        assert len(line) < 2000 and "300000 bytes" in line


def test_long_lines_of_an_exception_are_shortened() -> None:
    try:
        raise RuntimeError("v" * 300_000)
    except RuntimeError:
        import sys
        record = logging.LogRecord("criservice.test", logging.ERROR, __file__, 1, "crashed", None,
                                   sys.exc_info())
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert "Traceback" in line and "RuntimeError" in line  # the log keeps the traceback
        # The last line is "RuntimeError: vvv...": 14 bytes more than the value.
        assert len(line) < 5000 and "(300014 bytes)" in line, type(formatter).__name__
