"""Hybrid logical clocks (Kulkarni et al. 2014) for last-writer-wins registers.

A :class:`Timestamp` is ``(wall_ms, logical)``. It stays close to physical time, yet a write
made after observing another always gets a larger timestamp, so a replica whose wall clock
lags cannot lose its later write by accident. Ties between replicas are broken by replica id.

An HLC follows the largest timestamp it has seen, so one clock far in the future would drag
every later write with it and win every tie-break on the way. Like CockroachDB's maximum
clock offset, ``max_drift_ms`` bounds how far ahead of the local wall clock a timestamp may
be before it is refused (:class:`~crdt.errors.ClockDriftError`). Both parts are integers in
``[0, 2^63)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from crdt.codec import INT64_MAX
from crdt.errors import ClockDriftError

__all__ = [
    "DEFAULT_MAX_DRIFT_MS",
    "HybridClock",
    "Timestamp",
    "check_drift",
    "check_timestamp",
    "next_timestamp",
    "wall_clock_ms",
]

DEFAULT_MAX_DRIFT_MS = 60_000


class Timestamp(NamedTuple):
    wall_ms: int
    logical: int


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def check_timestamp(timestamp: Any) -> Timestamp:
    """A valid timestamp: two ints (not bools) in ``[0, 2^63)``; else ValueError."""
    if not isinstance(timestamp, tuple) or len(timestamp) != 2:
        raise ValueError(f"a timestamp is (wall_ms, logical), got {timestamp!r}")
    wall, logical = timestamp
    for part in (wall, logical):
        if type(part) is not int or not 0 <= part <= INT64_MAX:
            raise ValueError(f"timestamp parts must be integers in [0, 2^63), got {timestamp!r}")
    return Timestamp(wall, logical)


def check_drift(timestamp: Timestamp, now_ms: int, max_drift_ms: int) -> None:
    if timestamp.wall_ms - now_ms > max_drift_ms:
        raise ClockDriftError(
            f"timestamp {timestamp.wall_ms} ms is {timestamp.wall_ms - now_ms} ms ahead of this "
            f"clock, more than max_drift_ms={max_drift_ms}: fix the clock of the replica that "
            "wrote it, or raise max_drift_ms if that much drift is expected"
        )


def next_timestamp(last: Timestamp | None, wall_ms: int) -> Timestamp:
    """The HLC send/local rule: follow the wall clock, else count past the newest seen."""
    if last is None or wall_ms > last.wall_ms:
        return Timestamp(wall_ms, 0)
    return Timestamp(last.wall_ms, last.logical + 1)


class HybridClock:
    """One replica's clock: ``tick()`` for local writes, ``observe()`` for received ones."""

    def __init__(
        self,
        now_ms: Callable[[], int] = wall_clock_ms,
        *,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    ) -> None:
        self._now_ms = now_ms
        self.max_drift_ms = max_drift_ms
        self.last: Timestamp | None = None

    def now_ms(self) -> int:
        return self._now_ms()

    def tick(self, at_least: Timestamp | None = None) -> Timestamp:
        self.observe(at_least)
        self.last = next_timestamp(self.last, self._now_ms())
        return self.last

    def observe(self, seen: Timestamp | None) -> None:
        """Remember ``seen``; raises :class:`ClockDriftError` if it is too far ahead."""
        if seen is None:
            return
        check_drift(seen, self._now_ms(), self.max_drift_ms)
        if self.last is None or seen > self.last:
            self.last = Timestamp(*seen)
