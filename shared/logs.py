"""One line per log record, carrying the request id of the work in hand.

JSON by default; plain text (no colour) when stderr is a terminal, so that
``./scripts/run`` reads well. ``GRID_LOG_FORMAT`` forces either: json or text.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time

import orjson

# The id of the HTTP request (or bus message) being handled, carried end to end
# in the "x-request-id" message header.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
REQUEST_ID_HEADER = "x-request-id"

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# uvicorn's copy of its message with terminal colour codes: noise on a text line.
_TEXT_HIDDEN = {"color_message"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    """The record's ``extra=`` fields and the request id."""
    fields: dict[str, object] = {}
    if rid := request_id.get():
        fields["request_id"] = rid
    for key, value in record.__dict__.items():
        if key not in _RESERVED and not key.startswith("_"):
            fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON objects with any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``12:00:01.234 INFO  logger: message key=value ...`` on one line, no colour."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        pairs = "".join(f" {key}={value}" for key, value in _fields(record).items()
                        if key not in _TEXT_HIDDEN)
        line = (f"{clock}.{int(record.msecs):03d} {record.levelname:<5} {record.name}: "
                f"{record.getMessage()}{pairs}")
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line


def choose_formatter(log_format: str, stream: object) -> logging.Formatter:
    """``json``, ``text``, or ``auto``: text on a terminal, JSON otherwise."""
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        log_format = "text" if isatty is not None and isatty() else "json"
    return TextFormatter() if log_format == "text" else JsonFormatter()


def setup_logging(level: str, log_format: str = "auto") -> None:
    """Send one line per record to stderr at the given level (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(choose_formatter(log_format, sys.stderr))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
