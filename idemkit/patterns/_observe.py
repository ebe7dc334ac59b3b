"""The observer interface of :mod:`idemkit.observe`, for the patterns.

``idemkit.observe`` (as of 70292cc) cannot be imported on Python 3.11: its ``Event`` dataclass
has a ``MappingProxyType`` default, which 3.11's dataclasses reject as a mutable default
(fixed by ``field(default_factory=...)`` there). Until that lands, the same names are
defined here; once it imports, these are simply its own objects.
"""

from __future__ import annotations

try:
    from idemkit.observe import EMPTY_ATTRS, Event, Observer, Stopwatch, emit
except ValueError:  # pragma: no cover - depends on the Python version
    import logging
    import time
    from collections.abc import Callable, Mapping
    from dataclasses import dataclass, field
    from types import MappingProxyType
    from typing import Final

    _log = logging.getLogger("idemkit")
    EMPTY_ATTRS: Final[Mapping[str, object]] = MappingProxyType({})  # type: ignore[misc,no-redef]

    @dataclass(frozen=True, slots=True)
    class Event:  # type: ignore[no-redef]
        name: str
        outcome: str
        duration: float = 0.0
        start_ns: int = 0
        route: str | None = None
        attrs: Mapping[str, object] = field(default_factory=lambda: EMPTY_ATTRS)

    Observer = Callable[[Event], None]  # type: ignore[misc]
    _failed: set[int] = set()

    def emit(observer: Observer | None, event: Event) -> None:
        if observer is None:
            return
        try:
            observer(event)
        except Exception:
            if id(observer) not in _failed:
                _failed.add(id(observer))
                _log.exception("idemkit: observer %r failed; further failures not logged", observer)

    class Stopwatch:  # type: ignore[no-redef]
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


__all__ = ["EMPTY_ATTRS", "Event", "Observer", "Stopwatch", "emit"]
