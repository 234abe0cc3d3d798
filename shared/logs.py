"""One JSON line per log record, carrying the request id of the work in hand."""

from __future__ import annotations

import contextvars
import logging
import sys

import orjson

# The id of the HTTP request (or bus message) being handled, carried end to end
# in the "x-request-id" message header.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
REQUEST_ID_HEADER = "x-request-id"

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON objects with any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            line["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def setup_logging(level: str) -> None:
    """Send JSON lines to stderr at the given level (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
