"""Grow-only counter (Shapiro et al. spec 6): one monotone count per replica, merged by max."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdt.base import Crdt
from crdt.dots import validate_replica

__all__ = ["GCounter", "check_count", "decode_count", "encode_count"]

_MSGPACK_SAFE = 2**63


def encode_count(count: int) -> int | str:
    # msgpack stops at 64 bits; beyond that a count travels as a decimal string, exact.
    return count if count < _MSGPACK_SAFE else str(count)


def decode_count(raw: Any) -> int:
    # Only counts msgpack cannot carry travel as strings, and only in canonical decimal.
    if type(raw) is str:
        if not (raw.isascii() and raw.isdigit()) or raw.startswith("0"):
            raise ValueError(f"count string must be a canonical decimal, got {raw!r}")
        count = int(raw)
        if count < _MSGPACK_SAFE:
            raise ValueError(f"count {raw!r} fits msgpack and must travel as an integer")
        return count
    return check_count(raw)


def check_count(count: Any) -> int:
    if type(count) is not int or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    return count


class GCounter(Crdt):
    """Counts up only. ``value`` is the sum of the per-replica counts (exact, unbounded)."""

    TYPE_TAG = 1

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts: dict[str, int] = {}
        for replica, count in (counts or {}).items():
            validate_replica(replica)
            if check_count(count):
                self.counts[replica] = count
        self.counts = dict(sorted(self.counts.items()))

    def _fields(self) -> tuple[str, ...]:
        return ("counts",)

    @property
    def value(self) -> int:
        return sum(self.counts.values())

    def increment(self, replica: str, amount: int = 1) -> GCounter:
        validate_replica(replica)
        if type(amount) is not int or amount < 0:
            raise ValueError(f"GCounter only grows: amount must be an int >= 0, got {amount!r}")
        new = self.counts.get(replica, 0) + amount
        if new:
            self.counts = dict(sorted({**self.counts, replica: new}.items()))
        # The delta carries the absolute count, so applying it twice changes nothing.
        return self._stamp(GCounter({replica: new}))

    def _join(self, other: GCounter) -> GCounter:
        merged = dict(self.counts)
        for replica, count in other.counts.items():
            merged[replica] = max(merged.get(replica, 0), count)
        return GCounter(merged)

    def _state(self) -> Any:
        return self.counts

    def _payload(self) -> Any:
        return [[r, encode_count(n)] for r, n in self.counts.items()]

    @classmethod
    def _from_payload(cls, payload: Any) -> GCounter:
        return cls({r: decode_count(n) for r, n in payload})

    def __repr__(self) -> str:
        return f"GCounter(value={self.value}, counts={self.counts!r})"
