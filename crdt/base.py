"""The shape every CRDT type shares: value, merge, equality, repr, bytes."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Self

from crdt.codec import check_epoch, pack_envelope, unpack_envelope, unpack_envelope_epoch
from crdt.dots import CausalContext
from crdt.errors import CrdtCodecError, TypeMismatchError

__all__ = ["Crdt", "decode", "registered_types"]

_REGISTRY: dict[int, type[Crdt]] = {}


class Crdt(abc.ABC):
    """A state-based CRDT: a join-semilattice value with delta-returning mutators.

    ``a.merge(b)`` (or ``a | b``) returns the join and leaves both untouched; ``a |= b``
    joins in place. Mutators change the object in place *and* return a delta: a small state
    of the same type which, merged into any replica, carries the update.

    Every state also has a delete ``epoch`` (0 until the first :meth:`delete`). States of
    different epochs do not mix: the join keeps the one with the larger epoch whole, so a
    delete wins over the writes it did not see, and equal epochs join as usual. The order is
    lexicographic on (epoch, state), which is again a join-semilattice.
    """

    TYPE_TAG: ClassVar[int]
    VERSION: ClassVar[int] = 1
    epoch: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("TYPE_TAG")
        if tag is not None:
            _REGISTRY[tag] = cls

    @property
    def causal_context(self) -> CausalContext | None:
        """The dots this state has seen, for types whose deltas need causal delivery.

        ORSet, MVRegister and ORMap deltas may only be merged into a replica that has seen
        everything their sender had seen (see :mod:`crdt.delta`); other types return None
        and accept deltas in any order.
        """
        return None

    @property
    @abc.abstractmethod
    def value(self) -> Any:
        """The plain Python value users see."""

    @abc.abstractmethod
    def _join(self, other: Self) -> Self: ...

    @abc.abstractmethod
    def _payload(self) -> Any: ...

    @classmethod
    @abc.abstractmethod
    def _from_payload(cls, payload: Any) -> Self: ...

    @abc.abstractmethod
    def _state(self) -> Any:
        """A comparable snapshot of the whole state (for ``==``)."""

    def merge(self, other: Self) -> Self:
        if type(other) is not type(self):
            raise TypeMismatchError(
                f"cannot merge {type(other).__name__} into {type(self).__name__}"
            )
        if other.epoch != self.epoch:
            return (self if self.epoch > other.epoch else other).copy()
        joined = self._join(other)
        joined.epoch = self.epoch
        return joined

    def _stamp(self, delta: Self) -> Self:
        """Mark a mutator's delta with this state's epoch (else it would read as stale)."""
        delta.epoch = self.epoch
        return delta

    def delete(self) -> Self:
        """Empty this state into the next epoch; returns the delta (that empty state).

        Merged anywhere, the delta drops every write of older epochs, including writes made
        concurrently in other replicas (delete wins); writes made after it are kept. Two
        replicas that delete concurrently reach the same epoch, and their later writes join.
        """
        fresh = type(self)()
        fresh.epoch = self.epoch + 1
        self._become(fresh)
        return fresh.copy()

    def __or__(self, other: Self) -> Self:
        return self.merge(other)

    def __ior__(self, other: Self) -> Self:
        self._become(self.merge(other))
        return self

    def _become(self, other: Self) -> None:
        # In-place join: adopt the merged object's attributes (all types are small classes).
        for name in self._fields():
            setattr(self, name, getattr(other, name))
        self.epoch = other.epoch

    @abc.abstractmethod
    def _fields(self) -> tuple[str, ...]: ...

    def copy(self) -> Self:
        duplicate = self._from_payload(self._payload())
        duplicate.epoch = self.epoch
        return duplicate

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.epoch == other.epoch and bool(self._state() == other._state())

    __hash__ = None  # type: ignore[assignment]

    def to_bytes(self) -> bytes:
        return pack_envelope(self.TYPE_TAG, self.VERSION, self._payload(), self.epoch)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        tag, version, payload, epoch = unpack_envelope_epoch(data)
        if tag != cls.TYPE_TAG:
            other = _REGISTRY.get(tag)
            name = other.__name__ if other else f"unknown type tag {tag}"
            raise CrdtCodecError(f"bytes hold a {name}, not a {cls.__name__}")
        if version != cls.VERSION:
            raise CrdtCodecError(
                f"{cls.__name__} bytes have schema version {version}; this code reads "
                f"version {cls.VERSION}: upgrade idemkit on this side"
            )
        try:
            state = cls._from_payload(payload)
        except CrdtCodecError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise CrdtCodecError(f"corrupt {cls.__name__} payload: {exc}") from None
        state.epoch = check_epoch(epoch)
        return state


def decode(data: bytes) -> Crdt:
    """Decode bytes of any registered CRDT type."""
    tag, _, _ = unpack_envelope(data)
    cls = _REGISTRY.get(tag)
    if cls is None:
        raise CrdtCodecError(f"unknown crdt type tag {tag}: written by a newer idemkit?")
    return cls.from_bytes(data)


def registered_types() -> dict[int, type[Crdt]]:
    return dict(_REGISTRY)
