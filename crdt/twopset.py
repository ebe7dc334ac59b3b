"""Two-phase set (spec 12): an added set and a removed set; a removal is for ever."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crdt.base import Crdt
from crdt.codec import canonical_key, check_element
from crdt.errors import TombstonedElementError

__all__ = ["TwoPSet"]


class TwoPSet(Crdt):
    """Remove wins for ever and keeps a tombstone per removed element. Prefer ORSet."""

    TYPE_TAG = 4

    def __init__(self, added: Iterable[Any] = (), removed: Iterable[Any] = ()) -> None:
        self.removed: frozenset[Any] = frozenset(check_element(e) for e in removed)
        self.added: frozenset[Any] = frozenset(check_element(e) for e in added)

    def _fields(self) -> tuple[str, ...]:
        return ("added", "removed")

    @property
    def value(self) -> frozenset[Any]:
        return self.added - self.removed

    def add(self, element: Any) -> TwoPSet:
        check_element(element)
        if element in self.removed:
            raise TombstonedElementError(
                f"{element!r} was removed from this TwoPSet and can never come back; "
                "use an ORSet if elements are re-added"
            )
        self.added = self.added | {element}
        return self._stamp(TwoPSet(added=[element]))

    def remove(self, element: Any) -> TwoPSet:
        """Remove an element this replica has seen; removing an absent one is a no-op."""
        check_element(element)
        if element not in self.value:
            return self._stamp(TwoPSet())
        self.removed = self.removed | {element}
        return self._stamp(TwoPSet(removed=[element]))

    def _join(self, other: TwoPSet) -> TwoPSet:
        return TwoPSet(self.added | other.added, self.removed | other.removed)

    def _state(self) -> Any:
        return (self.added, self.removed)

    def _payload(self) -> Any:
        return [sorted(self.added, key=canonical_key), sorted(self.removed, key=canonical_key)]

    @classmethod
    def _from_payload(cls, payload: Any) -> TwoPSet:
        added, removed = payload
        if not isinstance(added, list) or not isinstance(removed, list):
            raise TypeError("TwoPSet payload must be two lists")
        return cls(added, removed)

    def __repr__(self) -> str:
        live = sorted(self.value, key=canonical_key)
        return f"TwoPSet({live!r}, tombstones={len(self.removed)})"
