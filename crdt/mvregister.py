"""Multi-value register (spec 10, dotted): concurrent writes are all kept, none is lost.

``value`` is a tuple of the concurrent values (one after a write that saw all others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdt.base import Crdt
from crdt.codec import normalize_value, pack
from crdt.dots import CausalContext, Dot, check_counter, check_dot_reuse, check_replica

__all__ = ["MVRegister"]


class MVRegister(Crdt):
    TYPE_TAG = 6

    def __init__(
        self, entries: Mapping[Dot, Any] | None = None, context: CausalContext | None = None
    ) -> None:
        self.entries: dict[Dot, Any] = dict(sorted((entries or {}).items()))
        self.context = (context or CausalContext()).with_dots(self.entries)

    @property
    def causal_context(self) -> CausalContext:
        return self.context

    def _fields(self) -> tuple[str, ...]:
        return ("entries", "context")

    @property
    def value(self) -> tuple[Any, ...]:
        return tuple(self.entries.values())

    def assign(self, replica: str, value: Any) -> MVRegister:
        """Write ``value``, replacing every value this replica has seen."""
        check_replica(replica)
        value = normalize_value(value)
        dot = self.context.next_dot(replica)
        delta = self._stamp(MVRegister({dot: value}, CausalContext.of(self.entries)))
        self.entries = {dot: value}
        self.context = self.context.with_dots([dot])
        return delta

    def _join(self, other: MVRegister) -> MVRegister:
        check_dot_reuse(
            {d: pack(v) for d, v in self.entries.items()},
            {d: pack(v) for d, v in other.entries.items()},
            "values",
        )
        merged = {d: v for d, v in self.entries.items() if d in other.entries}
        merged.update((d, v) for d, v in self.entries.items() if d not in other.context)
        merged.update((d, v) for d, v in other.entries.items() if d not in self.context)
        return MVRegister(merged, self.context.join(other.context))

    def _state(self) -> Any:
        return (self.entries, self.context)

    def _payload(self) -> Any:
        return [[[r, c, v] for (r, c), v in self.entries.items()], self.context.to_payload()]

    @classmethod
    def _from_payload(cls, payload: Any) -> MVRegister:
        items, ctx = payload
        entries: dict[Dot, Any] = {}
        for replica, counter, value in items:
            entries[(check_replica(replica), check_counter(counter))] = normalize_value(value)
        return cls(entries, CausalContext.from_payload(ctx))

    def __repr__(self) -> str:
        return f"MVRegister(values={self.value!r}, context={self.context!r})"
