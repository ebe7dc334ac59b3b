"""Hybrid logical clocks (Kulkarni et al. 2014) for last-writer-wins registers.

A :class:`Timestamp` is ``(wall_ms, logical)``. It stays close to physical time, yet a write
made after observing another always gets a larger timestamp, so a replica whose wall clock
lags cannot lose its later write by accident. Ties between replicas are broken by replica id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["HybridClock", "Timestamp", "next_timestamp", "wall_clock_ms"]


class Timestamp(NamedTuple):
    wall_ms: int
    logical: int


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def next_timestamp(last: Timestamp | None, wall_ms: int) -> Timestamp:
    """The HLC send/local rule: follow the wall clock, else count past the newest seen."""
    if last is None or wall_ms > last.wall_ms:
        return Timestamp(wall_ms, 0)
    return Timestamp(last.wall_ms, last.logical + 1)


class HybridClock:
    """One replica's clock: ``tick()`` for local writes, ``observe()`` for received ones."""

    def __init__(self, now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._now_ms = now_ms
        self.last: Timestamp | None = None

    def tick(self, at_least: Timestamp | None = None) -> Timestamp:
        self.observe(at_least)
        self.last = next_timestamp(self.last, self._now_ms())
        return self.last

    def observe(self, seen: Timestamp | None) -> None:
        if seen is not None and (self.last is None or seen > self.last):
            self.last = Timestamp(*seen)
