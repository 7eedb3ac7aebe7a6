"""The daemon's own log (container logs are conmon's), structured, to stderr: `text`
(key=value) or `json` (one object per line).

Call sites pass structured fields with `extra={"fields": {...}}`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from runtime.errors import shown

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "error": logging.ERROR}


def _timestamp(record: logging.LogRecord) -> str:
    t = time.gmtime(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"


# Fields carry request values (ids, names, paths, error messages that echo them): a
# hostile 300 KB id must not make a 300 KB log line. Longer values keep a prefix and
# their length; so do the message and each line of a traceback.
FIELD_MAX = 1024


def _bounded(value: object) -> object:
    if isinstance(value, str):
        return value if len(value) <= FIELD_MAX else shown(value, FIELD_MAX, str)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = json.dumps(value, default=str)
    return value if len(text) <= FIELD_MAX else shown(text, FIELD_MAX, str)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {key: _bounded(value) for key, value in getattr(record, "fields", {}).items()}


class _Bounded(logging.Formatter):
    def message(self, record: logging.LogRecord) -> str:
        return str(_bounded(record.getMessage()))

    def formatException(self, ei: Any) -> str:
        return "\n".join(str(_bounded(line)) for line in super().formatException(ei).splitlines())


class JsonFormatter(_Bounded):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": _timestamp(record), "level": record.levelname.lower(),
            "logger": record.name, "msg": self.message(record),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(_Bounded):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={json.dumps(self.message(record))}"]
        for key, value in _fields(record).items():
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
