"""Shipping deltas safely: causal delivery for the dotted types, full state as the fallback.

A remove delta of an ORSet names the dots it removes, but not the older dots its sender had
already overwritten; merged into a replica that still holds one of those, the element would
come back. So a dotted delta travels with the context its sender had *before* the op, and a
receiver merges it only once its own context covers that one (Almeida et al.'s causal
delta-merging condition). A delta that is never ready (its predecessor was lost) is
superseded by the next full-state anti-entropy round, after which it is harmless.

Counters, GSet, TwoPSet and LWWRegister deltas need none of this: ``requires`` is None.

Delete epochs: a delta of an older epoch than the receiver is harmless (the join ignores
it). A delta of a newer epoch replaces the receiver's state wholesale, so it stands alone
only if it was made on an empty state of its epoch: the delete itself, or the first write
after it; later deltas of that epoch wait until the receiver has reached the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from crdt.base import Crdt, decode
from crdt.codec import pack, unpack
from crdt.dots import CausalContext
from crdt.errors import CrdtCodecError

__all__ = ["DeltaMessage"]

T = TypeVar("T", bound=Crdt)


@dataclass(frozen=True)
class DeltaMessage(Generic[T]):
    delta: T
    requires: CausalContext | None = None

    @classmethod
    def after(cls, context_before: CausalContext | None, delta: T) -> DeltaMessage[T]:
        """Wrap ``delta`` with the sender's ``causal_context`` read just before the op."""
        return cls(delta, context_before)

    def ready_for(self, receiver: Crdt) -> bool:
        if self.delta.epoch < receiver.epoch:
            return True
        if self.delta.epoch > receiver.epoch:
            if self.requires is None or self.requires.is_empty():
                return True
            reset = type(self.delta)()
            reset.epoch = self.delta.epoch
            return self.delta == reset
        if self.requires is None:
            return True
        context = receiver.causal_context
        return context is not None and context.covers(self.requires)

    def to_bytes(self) -> bytes:
        ctx = None if self.requires is None else self.requires.to_payload()
        return pack([self.delta.to_bytes(), ctx])

    @classmethod
    def from_bytes(cls, data: bytes) -> DeltaMessage[Any]:
        try:
            raw, ctx = unpack(data)
            requires = None if ctx is None else CausalContext.from_payload(ctx)
            return DeltaMessage(decode(raw), requires)
        except CrdtCodecError:
            raise
        except (TypeError, ValueError) as exc:
            raise CrdtCodecError(f"corrupt delta message: {exc}") from None
