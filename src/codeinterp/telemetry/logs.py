"""Log lines: one per HTTP request (api/middleware.py) and one per execution
(sessions/execution.py), each with the request id and the trace id it belongs to, as text or as
one JSON object per line (``codeinterp serve --log-format json`` or CODEINTERP_LOG_FORMAT)."""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

requests = logging.getLogger("codeinterp.requests")
executions = logging.getLogger("codeinterp.executions")

# The id of the HTTP request being handled (x-request-id), for every line it causes: the tasks
# it starts (a run) inherit it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def trace_id() -> str | None:
    """The current trace's id as 32 hex digits, or None outside a recorded trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def event(logger: logging.Logger, message: str, **fields: Any) -> None:
    """One line: `message` and `fields` (None values left out), with the trace id."""
    if logger.isEnabledFor(logging.INFO):
        fields.setdefault("request_id", request_id.get())
        fields.setdefault("trace_id", trace_id())
        clean = {k: v for k, v in fields.items() if v is not None}
        logger.info(message, extra={"fields": clean})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname} {record.name}: {record.getMessage()}"
        fields = getattr(record, "fields", {})
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure(level: str, fmt: str) -> None:
    """The root logger's handler: text lines, or JSON lines with `fmt` "json"."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
