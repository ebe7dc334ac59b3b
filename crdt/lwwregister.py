"""Last-writer-wins register (spec 8) ordered by (hybrid logical clock, replica id).

A write takes a timestamp larger than the one the register holds, so a write made after
reading the register always wins even if the writer's wall clock is behind. Concurrent
writes are ordered by HLC, then by replica id (the larger id wins a tie).
"""

from __future__ import annotations

from typing import Any

from crdt.base import Crdt
from crdt.codec import normalize_value
from crdt.dots import validate_replica
from crdt.errors import TimestampReuseError
from crdt.hlc import HybridClock, Timestamp, next_timestamp, wall_clock_ms

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
        self.timestamp = None if timestamp is None else Timestamp(*timestamp)
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
    ) -> LWWRegister:
        """Write ``value``; the timestamp comes from ``timestamp``, else ``clock``, else HLC
        over the wall clock, and is always past the register's current one."""
        validate_replica(replica)
        if timestamp is None:
            if clock is not None:
                timestamp = clock.tick(at_least=self.timestamp)
            else:
                timestamp = next_timestamp(self.timestamp, wall_clock_ms())
        delta = LWWRegister(value, timestamp, replica)
        self._become(self.merge(delta))
        return delta

    def _join(self, other: LWWRegister) -> LWWRegister:
        mine, theirs = self.order_key, other.order_key
        if theirs is None:
            return self.copy()
        if mine is None or theirs > mine:
            return other.copy()
        if theirs == mine and other._value != self._value:
            raise TimestampReuseError(
                f"replica {self.replica!r} wrote two values at {self.timestamp}: a replica id "
                "was reused (two writers, or a restored backup); give each writer its own id"
            )
        return self.copy()

    def _state(self) -> Any:
        return (self.order_key, self._value)

    def _payload(self) -> Any:
        if self.timestamp is None:
            return []
        return [self.timestamp.wall_ms, self.timestamp.logical, self.replica, self._value]

    @classmethod
    def _from_payload(cls, payload: Any) -> LWWRegister:
        if payload == []:
            return cls()
        wall, logical, replica, value = payload
        if type(wall) is not int or type(logical) is not int or wall < 0 or logical < 0:
            raise ValueError("LWW timestamp must be two non-negative integers")
        if not isinstance(replica, str):
            raise TypeError("LWW replica id must be a string")
        return cls(value, Timestamp(wall, logical), replica)

    def __repr__(self) -> str:
        return f"LWWRegister({self._value!r}, timestamp={self.timestamp}, replica={self.replica!r})"
