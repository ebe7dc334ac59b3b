"""Last-writer-wins register (spec 8) ordered by (hybrid logical clock, replica id).

A write takes a timestamp larger than the one the register holds, so a write made after
reading the register always wins even if the writer's wall clock is behind. Concurrent
writes are ordered by HLC, then by replica id (the larger id wins a tie). Values are kept in
canonical form and compared by their bytes, so equal values are one value and ``True`` and
``1`` are two. Timestamps more than ``max_drift_ms`` ahead of the local clock are refused
where a write enters: :meth:`LWWRegister.assign` and :meth:`LWWRegister.receive`.
"""

from __future__ import annotations

from typing import Any

from crdt.base import Crdt
from crdt.codec import normalize_value, pack
from crdt.dots import validate_replica
from crdt.errors import TimestampReuseError
from crdt.hlc import (
    DEFAULT_MAX_DRIFT_MS,
    HybridClock,
    Timestamp,
    check_drift,
    check_timestamp,
    next_timestamp,
    wall_clock_ms,
)

__all__ = ["LWWRegister"]


class LWWRegister(Crdt):
    TYPE_TAG = 7

    def __init__(
        self,
        value: Any = None,
        timestamp: Timestamp | None = None,
        replica: str | None = None,
    ) -> None:
        if (timestamp is None) != (replica is None):
            raise ValueError("timestamp and replica are given together or not at all")
        self._value = None if timestamp is None else normalize_value(value)
        self.timestamp = None if timestamp is None else check_timestamp(timestamp)
        self.replica = None if replica is None else validate_replica(replica)

    def _fields(self) -> tuple[str, ...]:
        return ("_value", "timestamp", "replica")

    @property
    def value(self) -> Any:
        return self._value

    @property
    def order_key(self) -> tuple[Timestamp, str] | None:
        if self.timestamp is None or self.replica is None:
            return None
        return (self.timestamp, self.replica)

    def assign(
        self,
        replica: str,
        value: Any,
        *,
        clock: HybridClock | None = None,
        timestamp: Timestamp | None = None,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        now_ms: int | None = None,
    ) -> LWWRegister:
        """Write ``value``; the timestamp comes from ``timestamp``, else ``clock``, else HLC
        over the wall clock, and is always past the register's current one.

        Refuses (:class:`~crdt.errors.ClockDriftError`) a ``timestamp`` or a current one that
        lies more than ``max_drift_ms`` ahead of ``now_ms`` (default: the wall clock).
        """
        validate_replica(replica)
        if clock is not None:
            now = clock.now_ms() if now_ms is None else now_ms
            max_drift_ms = clock.max_drift_ms
        else:
            now = wall_clock_ms() if now_ms is None else now_ms
        if timestamp is not None:
            timestamp = check_timestamp(timestamp)
            check_drift(timestamp, now, max_drift_ms)
        else:
            if self.timestamp is not None:
                check_drift(self.timestamp, now, max_drift_ms)
            if clock is not None:
                timestamp = clock.tick(at_least=self.timestamp)
            else:
                timestamp = next_timestamp(self.timestamp, now)
        delta = self._stamp(LWWRegister(value, timestamp, replica))
        self._become(self.merge(delta))
        return delta

    def receive(
        self,
        other: LWWRegister,
        *,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        now_ms: int | None = None,
    ) -> bool:
        """Merge a register from another replica after checking its clock drift.

        Returns whether ``other`` won. The join itself (``|``) never checks drift: it has to
        stay total for the laws; this is the door where foreign timestamps come in.
        """
        if other.timestamp is not None:
            now = wall_clock_ms() if now_ms is None else now_ms
            check_drift(other.timestamp, now, max_drift_ms)
        before = self.order_key
        self |= other
        return self.order_key != before

    def _join(self, other: LWWRegister) -> LWWRegister:
        mine, theirs = self.order_key, other.order_key
        if theirs is None:
            return self.copy()
        if mine is None or theirs > mine:
            return other.copy()
        if theirs == mine and pack(other._value) != pack(self._value):
            raise TimestampReuseError(
                f"replica {self.replica!r} wrote two values at {self.timestamp}: a replica id "
                "was reused (two writers, or a restored backup); give each writer its own id"
            )
        return self.copy()

    def _state(self) -> Any:
        return (self.order_key, pack(self._value))

    def _payload(self) -> Any:
        if self.timestamp is None:
            return []
        return [self.timestamp.wall_ms, self.timestamp.logical, self.replica, self._value]

    @classmethod
    def _from_payload(cls, payload: Any) -> LWWRegister:
        if payload == []:
            return cls()
        wall, logical, replica, value = payload
        if not isinstance(replica, str):
            raise TypeError("LWW replica id must be a string")
        return cls(value, check_timestamp((wall, logical)), replica)

    def __repr__(self) -> str:
        return f"LWWRegister({self._value!r}, timestamp={self.timestamp}, replica={self.replica!r})"
