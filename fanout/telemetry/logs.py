"""Logging: one JSON object per line (``json``) or readable text (``text``), on stderr.

Every line has ``time``, ``level``, ``logger`` and ``message``. Lines about a delivery also carry
``subscription``, ``event_id`` and the ``trace_id`` / ``span_id`` of its trace: taken from the
``traceparent`` the code passes in ``extra`` (see ``fanout.model.log_fields``), or else from the current
span. Other ``extra`` fields are written as they are. Code passes only identifiers, reasons and
statuses; secrets, request headers and payloads are never logged.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson
from opentelemetry import trace

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _trace_ids(record: logging.LogRecord) -> tuple[str, str] | None:
    traceparent = getattr(record, "traceparent", None)
    if isinstance(traceparent, str):
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            return parts[1], parts[2]
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return f"{context.trace_id:032x}", f"{context.span_id:016x}"
    return None


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    ids = _trace_ids(record)
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key != "traceparent" and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._static,
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, static: dict[str, Any] | None = None) -> None:
        prefix = "".join(f"[{k} {v}] " for k, v in (static or {}).items())
        super().__init__(f"%(asctime)s %(levelname)s {prefix}%(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = _fields(record)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


def _iso(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


def setup_logging(log_format: str = "json", level: str = "INFO", **static: Any) -> None:
    """Configure the root logger (replacing its handlers). ``static`` fields go on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static) if log_format == "json" else TextFormatter(static))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
