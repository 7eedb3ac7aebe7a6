"""Structured logging to stderr: `text` (key=value) or `json` (one object per line).

Call sites pass structured fields with `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import sys
import time

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "error": logging.ERROR}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": _timestamp(record), "level": record.levelname.lower(),
            "logger": record.name, "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={json.dumps(record.getMessage())}"]
        for key, value in getattr(record, "fields", {}).items():
            text = value if isinstance(value, str) and value and " " not in value and '"' not in value \
                else json.dumps(value, default=str)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])
    # httpx logs every request at INFO; a pull of a busy node would drown the log.
    logging.getLogger("httpx").setLevel(max(_LEVELS[level], logging.WARNING))
