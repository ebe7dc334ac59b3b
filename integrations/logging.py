"""Structured log records from idemkit's events: ``observer=LoggingObserver()``.

Each event becomes one record on the ``idemkit.events`` logger with its fields in ``extra=``,
the way idemkit's own log lines carry theirs (:class:`idemkit.ratelog.RateLimitedLog`):

- ``idemkit``: what happened (the event name, e.g. ``idempotency.request``; for idemkit's
  own lines, the cause);
- ``idemkit_outcome``, ``idemkit_duration_ms``, ``idemkit_route`` (route template or
  namespace, when there is one) and ``idemkit_<attr>`` for each of the event's attributes.

No keys, bodies or credentials: events carry none. Outcomes that mean the store failed or a
guarantee was lost are logged at WARNING, everything else at ``level`` (default DEBUG).
:class:`JsonFormatter` writes records, with these fields, as one JSON object per line.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

from idemkit.observe import Event

__all__ = ["WARNING_OUTCOMES", "JsonFormatter", "LoggingObserver"]

WARNING_OUTCOMES: Final = frozenset(
    {"unavailable", "store_failed", "lost", "fenced", "error", "timeout"}
)


class LoggingObserver:
    """An idemkit observer that logs each event as a structured record."""

    def __init__(self, logger: logging.Logger | None = None, *, level: int = logging.DEBUG) -> None:
        self.logger = logger or logging.getLogger("idemkit.events")
        self.level = level

    def __call__(self, event: Event) -> None:
        level = logging.WARNING if event.outcome in WARNING_OUTCOMES else self.level
        if not self.logger.isEnabledFor(level):
            return
        fields: dict[str, Any] = {
            "idemkit": event.name,
            "idemkit_outcome": event.outcome,
            "idemkit_duration_ms": round(event.duration * 1000, 3),
        }
        if event.route is not None:
            fields["idemkit_route"] = event.route
        for name, value in event.attrs.items():
            fields[f"idemkit_{name}"] = value
        route = f" {event.route}" if event.route else ""
        self.logger.log(
            level,
            "idemkit %s%s: %s (%.1f ms)",
            event.name,
            route,
            event.outcome,
            event.duration * 1000,
            extra=fields,
        )


_STANDARD = frozenset(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and every ``extra=`` field
    (idemkit's ``idemkit*`` fields among them)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)
