"""One observer interface for metrics, tracing and structured logs.

Every primitive reports what happened as an :class:`Event`: the idempotency middleware and
decorator (one event per request or call, plus one per store operation), locks, CRDT
storage and sync, and the transaction patterns. An *observer* is any callable taking an
event; Prometheus, OpenTelemetry and logging adapters live in ``integrations/`` and are
never imported by the core. Observers run inline on the hot path, so they must be quick
and must not block; an observer that raises is logged once and never breaks the caller.

Events carry no idempotency keys, request bodies or credentials: ``route`` is a route
template or a function's namespace, never a raw path with ids in it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

__all__ = [
    "EMPTY_ATTRS",
    "Event",
    "Observer",
    "Stopwatch",
    "emit",
    "fan_out",
]

log = logging.getLogger("idemkit")

EMPTY_ATTRS: Final[Mapping[str, object]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Event:
    """Something an idemkit primitive did.

    ``name`` says which operation (``"idempotency.request"``, ``"idempotency.store"``,
    ``"lock.acquire"``, ``"lock.hold"``, ``"crdt.sync"``, ...), ``outcome`` how it ended
    (``"executed"``, ``"replayed"``, ``"ok"``, ``"timeout"``, ...). ``duration`` is in
    seconds and ``start_ns`` the wall-clock start (``time.time_ns()``), so a tracer can
    record a span after the fact; both are 0 for instantaneous events.
    """

    name: str
    outcome: str
    duration: float = 0.0
    start_ns: int = 0
    route: str | None = None
    attrs: Mapping[str, object] = field(default_factory=lambda: EMPTY_ATTRS)


Observer = Callable[[Event], None]

_failed: set[int] = set()


def emit(observer: Observer | None, event: Event) -> None:
    """Hand ``event`` to ``observer`` (if any); an observer bug never reaches the caller."""
    if observer is None:
        return
    try:
        observer(event)
    except Exception:
        # Log each broken observer once: a failing metrics backend must not flood the log.
        if id(observer) not in _failed:
            _failed.add(id(observer))
            log.exception("idemkit: observer %r failed; further failures are not logged", observer)


def fan_out(observers: Iterable[Observer | None]) -> Observer | None:
    """One observer calling several (e.g. Prometheus and OpenTelemetry); None if none given."""
    chosen = tuple(o for o in observers if o is not None)
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]

    def observe_all(event: Event) -> None:
        for observer in chosen:
            emit(observer, event)

    return observe_all


class Stopwatch:
    """Times one operation for an :class:`Event` (monotonic duration, wall-clock start)."""

    __slots__ = ("_start", "start_ns")

    def __init__(self) -> None:
        self.start_ns = time.time_ns()
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def event(
        self,
        name: str,
        outcome: str,
        *,
        route: str | None = None,
        attrs: Mapping[str, object] = EMPTY_ATTRS,
    ) -> Event:
        return Event(name, outcome, self.elapsed(), self.start_ns, route, attrs)
