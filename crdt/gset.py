"""Grow-only set (spec 11): merge is union; nothing is ever removed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crdt.base import Crdt
from crdt.codec import canonical_key, check_element

__all__ = ["GSet"]


class GSet(Crdt):
    """Elements are str, bytes or 64-bit ints."""

    TYPE_TAG = 3

    def __init__(self, elements: Iterable[Any] = ()) -> None:
        self.elements: frozenset[Any] = frozenset(check_element(e) for e in elements)

    def _fields(self) -> tuple[str, ...]:
        return ("elements",)

    @property
    def value(self) -> frozenset[Any]:
        return self.elements

    def add(self, element: Any) -> GSet:
        check_element(element)
        self.elements = self.elements | {element}
        return self._stamp(GSet([element]))

    def _join(self, other: GSet) -> GSet:
        return GSet(self.elements | other.elements)

    def _state(self) -> Any:
        return self.elements

    def _payload(self) -> Any:
        return sorted(self.elements, key=canonical_key)

    @classmethod
    def _from_payload(cls, payload: Any) -> GSet:
        if not isinstance(payload, list):
            raise TypeError("GSet payload must be a list")
        return cls(payload)

    def __repr__(self) -> str:
        return f"GSet({sorted(self.elements, key=canonical_key)!r})"
