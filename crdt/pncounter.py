"""Positive-negative counter (spec 7): two grow-only counters, value = P - N."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdt.base import Crdt
from crdt.gcounter import GCounter

__all__ = ["PNCounter"]


class PNCounter(Crdt):
    """Counts up and down. ``increment`` with a negative amount decrements."""

    TYPE_TAG = 2

    def __init__(
        self,
        increments: Mapping[str, int] | None = None,
        decrements: Mapping[str, int] | None = None,
    ) -> None:
        self.p = GCounter(increments)
        self.n = GCounter(decrements)

    def _fields(self) -> tuple[str, ...]:
        return ("p", "n")

    @property
    def value(self) -> int:
        return self.p.value - self.n.value

    def increment(self, replica: str, amount: int = 1) -> PNCounter:
        if type(amount) is not int:
            raise ValueError(f"amount must be an int, got {amount!r}")
        if amount < 0:
            return self.decrement(replica, -amount)
        return self._stamp(PNCounter(increments=self.p.increment(replica, amount).counts))

    def decrement(self, replica: str, amount: int = 1) -> PNCounter:
        if type(amount) is not int or amount < 0:
            raise ValueError(f"decrement amount must be an int >= 0, got {amount!r}")
        return self._stamp(PNCounter(decrements=self.n.increment(replica, amount).counts))

    def _join(self, other: PNCounter) -> PNCounter:
        return PNCounter(self.p.merge(other.p).counts, self.n.merge(other.n).counts)

    def _state(self) -> Any:
        return (self.p.counts, self.n.counts)

    def _payload(self) -> Any:
        return [self.p._payload(), self.n._payload()]

    @classmethod
    def _from_payload(cls, payload: Any) -> PNCounter:
        p, n = payload
        return cls(GCounter._from_payload(p).counts, GCounter._from_payload(n).counts)

    def __repr__(self) -> str:
        return f"PNCounter(value={self.value}, p={self.p.counts!r}, n={self.n.counts!r})"
