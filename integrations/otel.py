"""OpenTelemetry spans from idemkit's events: ``observer=OpenTelemetryObserver()``.

Each event becomes one span, recorded after the fact from the event's wall-clock start
(``Event.start_ns``) and ``duration``, as a child of the span current where the event was
emitted (the request's server span under an instrumented ASGI server, for instance):

- ``idemkit.claim``, ``idemkit.complete``, ``idemkit.release``, ``idemkit.renew``: one per
  store operation (``idempotency.store``);
- ``idemkit.request`` (``idemkit.replay`` for a replayed one), ``idemkit.call``: one per
  keyed request or idempotent function call, from the claim to the stored answer;
- ``idemkit.lock.acquire`` (the wait) and ``idemkit.lock.hold``; ``idemkit.<event>`` for
  any other event (CRDT merges and sync rounds, circuit breaker changes, patterns).

Attributes: ``idemkit.outcome``, ``http.route`` (route template) or ``idemkit.namespace``,
and the event's own ``attrs`` as ``idemkit.<name>``. Never a key, a body or a credential:
events carry none. Outcomes that mean the store failed or a guarantee was lost set the
span status to ERROR.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Final

from integrations._extras import missing_extra

try:
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode, TracerProvider
except ImportError as exc:
    raise missing_extra(__name__, "otel", exc) from exc

from idemkit.observe import Event

__all__ = ["ERROR_OUTCOMES", "OpenTelemetryObserver", "span_name"]

ERROR_OUTCOMES: Final = frozenset(
    {"unavailable", "store_failed", "lost", "fenced", "error", "timeout"}
)

_HTTP_EVENTS: Final = frozenset({"idempotency.request", "idempotency.completion"})


def span_name(event: Event) -> str:
    """The span name of an event (see the module docstring)."""
    if event.name == "idempotency.store":
        return f"idemkit.{event.attrs.get('op', 'store')}"
    if event.name in ("idempotency.request", "idempotency.call"):
        if event.outcome == "replayed":
            return "idemkit.replay"
        return "idemkit.request" if event.name == "idempotency.request" else "idemkit.call"
    return f"idemkit.{event.name}"


class OpenTelemetryObserver:
    """Records a span per idemkit event on ``tracer_provider`` (default: the global one).

    ``events`` limits the spans to those event names (e.g. ``{"idempotency.request",
    "lock.acquire"}``); default all.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        events: Iterable[str] | None = None,
    ) -> None:
        self.tracer = trace.get_tracer("idemkit", tracer_provider=tracer_provider)
        self.events = None if events is None else frozenset(events)

    def __call__(self, event: Event) -> None:
        if self.events is not None and event.name not in self.events:
            return
        start = event.start_ns or time.time_ns()
        attributes: dict[str, Any] = {"idemkit.event": event.name, "idemkit.outcome": event.outcome}
        if event.route is not None:
            where = "http.route" if event.name in _HTTP_EVENTS else "idemkit.namespace"
            attributes[where] = event.route
        for name, value in event.attrs.items():
            if isinstance(value, str | bool | int | float):
                attributes[f"idemkit.{name}"] = value
        span = self.tracer.start_span(span_name(event), start_time=start, attributes=attributes)
        if event.outcome in ERROR_OUTCOMES:
            span.set_status(Status(StatusCode.ERROR, event.outcome))
        span.end(end_time=start + int(event.duration * 1e9))
