"""Add-wins observed-remove set without tombstones (ORSWOT; Bieniusa et al. 2012).

Each live element keeps the dots of the adds that created it; the causal context remembers
every dot seen. A remove just drops the element's dots, and its delta carries them as
context, so a replica that merges it deletes exactly those dots: an add the remover never
saw (a concurrent add, or a later re-add with a fresh dot) survives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crdt.base import Crdt
from crdt.codec import canonical_key, check_element
from crdt.dots import (
    CausalContext,
    Dot,
    check_counter,
    check_dot_reuse,
    check_replica,
    join_dot_sets,
    validate_replica,
)

__all__ = ["ORSet", "dot_index", "dots_from_payload", "dots_to_payload"]


def dots_to_payload(dots: frozenset[Dot]) -> list[list[Any]]:
    return [[r, c] for r, c in sorted(dots)]


def dots_from_payload(items: Any) -> frozenset[Dot]:
    if not isinstance(items, list):
        raise TypeError("dots must be a list of [replica, counter] pairs")
    return frozenset((check_replica(r), check_counter(c)) for r, c in items)


def dot_index(entries: Mapping[Any, frozenset[Dot]]) -> dict[Dot, Any]:
    """Which element (or key) each live dot belongs to."""
    return {dot: element for element, dots in entries.items() for dot in dots}


class ORSet(Crdt):
    """Add-wins set of str, bytes or 64-bit ints; removals leave nothing behind."""

    TYPE_TAG = 5

    def __init__(
        self,
        entries: Mapping[Any, frozenset[Dot]] | None = None,
        context: CausalContext | None = None,
    ) -> None:
        self.entries: dict[Any, frozenset[Dot]] = {
            check_element(e): frozenset(d) for e, d in (entries or {}).items() if d
        }
        dots = [d for ds in self.entries.values() for d in ds]
        # A state's context always covers its own dots; deltas built by hand may omit them.
        self.context = (context or CausalContext()).with_dots(dots)

    @property
    def causal_context(self) -> CausalContext:
        return self.context

    def _fields(self) -> tuple[str, ...]:
        return ("entries", "context")

    @property
    def value(self) -> frozenset[Any]:
        return frozenset(self.entries)

    def __contains__(self, element: object) -> bool:
        return element in self.entries

    def add(self, replica: str, element: Any) -> ORSet:
        validate_replica(replica)
        check_element(element)
        dot = self.context.next_dot(replica)
        # The delta's context also covers the element's older dots, so receivers replace
        # them by the new one instead of accumulating dots per re-add.
        delta = self._stamp(
            ORSet({element: frozenset([dot])}, CausalContext.of(self.entries.get(element, ())))
        )
        # In place: states never share their dicts (joins and copies build new ones).
        self.entries[element] = frozenset([dot])
        self.context = self.context.with_dots([dot])
        return delta

    def remove(self, element: Any) -> ORSet:
        """Remove what this replica has observed of ``element``; absent means empty delta."""
        check_element(element)
        dots = self.entries.pop(element, None)
        if not dots:
            return self._stamp(ORSet())
        return self._stamp(ORSet(None, CausalContext.of(dots)))

    def _join(self, other: ORSet) -> ORSet:
        check_dot_reuse(dot_index(self.entries), dot_index(other.entries), "elements")
        merged: dict[Any, frozenset[Dot]] = {}
        for element in self.entries.keys() | other.entries.keys():
            dots = join_dot_sets(
                self.entries.get(element, frozenset()),
                self.context,
                other.entries.get(element, frozenset()),
                other.context,
            )
            if dots:
                merged[element] = dots
        return ORSet(merged, self.context.join(other.context))

    def _state(self) -> Any:
        return (self.entries, self.context)

    def _payload(self) -> Any:
        items = sorted(self.entries.items(), key=lambda kv: canonical_key(kv[0]))
        return [[[e, dots_to_payload(d)] for e, d in items], self.context.to_payload()]

    @classmethod
    def _from_payload(cls, payload: Any) -> ORSet:
        items, ctx = payload
        entries = {check_element(e): dots_from_payload(d) for e, d in items}
        if len(entries) != len(items):
            raise ValueError("an element appears twice")
        return cls(entries, CausalContext.from_payload(ctx))

    def __repr__(self) -> str:
        live = sorted(self.entries, key=canonical_key)
        return f"ORSet({live!r}, context={self.context!r})"
