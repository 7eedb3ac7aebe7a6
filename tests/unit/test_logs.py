import json
import logging

from criservice.logs import JsonFormatter, TextFormatter


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
