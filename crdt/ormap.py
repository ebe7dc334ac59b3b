"""Observed-remove map whose values are themselves CRDTs.

Keys behave like an add-wins :class:`~crdt.orset.ORSet`: updating a key mints a dot, removing
it drops the dots this replica has seen, so an update concurrent with a remove keeps the key.
Values merge with their own join. A removed key's value is hidden, not reset: a key updated
again later shows the merged history (Akka ORMap has the same caveat); use a new key, or a
register value that the update overwrites, when a fresh start is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from crdt.base import Crdt, decode
from crdt.codec import canonical_key, check_element
from crdt.dots import CausalContext, Dot, check_dot_reuse, join_dot_sets, validate_replica
from crdt.errors import TypeMismatchError
from crdt.orset import dot_index, dots_from_payload, dots_to_payload

__all__ = ["ORMap"]

V = TypeVar("V", bound=Crdt)


class ORMap(Crdt):
    TYPE_TAG = 8

    def __init__(
        self,
        keys: Mapping[Any, frozenset[Dot]] | None = None,
        values: Mapping[Any, Crdt] | None = None,
        context: CausalContext | None = None,
    ) -> None:
        self.keys: dict[Any, frozenset[Dot]] = {
            check_element(k): frozenset(d) for k, d in (keys or {}).items() if d
        }
        self.values: dict[Any, Crdt] = {check_element(k): v for k, v in (values or {}).items()}
        dots = [d for ds in self.keys.values() for d in ds]
        self.context = (context or CausalContext()).with_dots(dots)

    @property
    def causal_context(self) -> CausalContext:
        return self.context

    def _fields(self) -> tuple[str, ...]:
        return ("keys", "values", "context")

    @property
    def value(self) -> dict[Any, Any]:
        live = sorted(self.keys, key=canonical_key)
        return {k: self.values[k].value for k in live if k in self.values}

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def get(self, key: Any, kind: type[V]) -> V | None:
        """A copy of the live value under ``key`` (None when absent)."""
        if key not in self.keys or key not in self.values:
            return None
        found = self.values[key]
        if not isinstance(found, kind):
            raise TypeMismatchError(
                f"key {key!r} holds a {type(found).__name__}, not {kind.__name__}"
            )
        return found.copy()

    def apply(self, replica: str, key: Any, kind: type[V], op: Callable[[V], V]) -> ORMap:
        """Update the value under ``key`` with ``op`` (a mutator returning its delta).

        ``op`` receives the current value (or a new empty ``kind``) and mutates it.
        """
        validate_replica(replica)
        check_element(key)
        current = self.values.get(key)
        if current is not None and not isinstance(current, kind):
            raise TypeMismatchError(
                f"key {key!r} holds a {type(current).__name__}; a key never changes type"
            )
        target: V = current.copy() if current is not None else kind()
        value_delta = op(target)
        dot = self.context.next_dot(replica)
        delta = self._stamp(
            ORMap(
                {key: frozenset([dot])},
                {key: value_delta},
                CausalContext.of(self.keys.get(key, ())),
            )
        )
        self._become(self.merge(delta))
        return delta

    def remove(self, key: Any) -> ORMap:
        check_element(key)
        dots = self.keys.get(key)
        if not dots:
            return self._stamp(ORMap())
        self.keys = {k: d for k, d in self.keys.items() if k != key}
        return self._stamp(ORMap(None, None, CausalContext.of(dots)))

    def _join(self, other: ORMap) -> ORMap:
        check_dot_reuse(dot_index(self.keys), dot_index(other.keys), "keys")
        keys: dict[Any, frozenset[Dot]] = {}
        for key in self.keys.keys() | other.keys.keys():
            dots = join_dot_sets(
                self.keys.get(key, frozenset()),
                self.context,
                other.keys.get(key, frozenset()),
                other.context,
            )
            if dots:
                keys[key] = dots
        values = dict(self.values)
        for key, theirs in other.values.items():
            mine = values.get(key)
            values[key] = theirs.copy() if mine is None else mine.merge(theirs)
        return ORMap(keys, values, self.context.join(other.context))

    def _state(self) -> Any:
        return (self.keys, self.values, self.context)

    def _payload(self) -> Any:
        names = sorted(self.keys.keys() | self.values.keys(), key=canonical_key)
        rows = [
            [
                k,
                dots_to_payload(self.keys.get(k, frozenset())),
                self.values[k].to_bytes() if k in self.values else None,
            ]
            for k in names
        ]
        return [rows, self.context.to_payload()]

    @classmethod
    def _from_payload(cls, payload: Any) -> ORMap:
        rows, ctx = payload
        keys: dict[Any, frozenset[Dot]] = {}
        values: dict[Any, Crdt] = {}
        for key, dots, raw in rows:
            keys[key] = dots_from_payload(dots)
            if raw is not None:
                values[key] = decode(raw)
        return cls(keys, values, CausalContext.from_payload(ctx))

    def copy(self) -> ORMap:
        duplicate = ORMap(self.keys, {k: v.copy() for k, v in self.values.items()}, self.context)
        duplicate.epoch = self.epoch
        return duplicate

    def __repr__(self) -> str:
        return f"ORMap({self.value!r}, context={self.context!r})"
