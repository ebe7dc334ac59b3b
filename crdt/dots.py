"""Dots and causal contexts: the metadata that lets removals leave no tombstones.

A *dot* ``(replica, counter)`` names one update event. A :class:`CausalContext` is the set of
dots a state has seen, kept compact as a version vector plus a "cloud" of dots that arrived
out of order (deltas carry exact dot sets, so a receiver may see dot 5 before dot 4).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from crdt.errors import DotReuseError, InvalidReplicaIdError

__all__ = [
    "CausalContext",
    "Dot",
    "check_counter",
    "check_dot_reuse",
    "join_dot_sets",
    "validate_replica",
]

Dot = tuple[str, int]

_REPLICA_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def validate_replica(replica: str) -> str:
    # Replica ids end up inside Redis field names ("counter|replica") and comma-joined
    # lists in Lua, so the alphabet is closed on purpose.
    if not isinstance(replica, str) or not _REPLICA_RE.fullmatch(replica):
        raise InvalidReplicaIdError(
            f"replica id {replica!r} is invalid: use 1..64 characters from [A-Za-z0-9_.-], "
            "one stable id per region or writer"
        )
    return replica


class CausalContext:
    """An immutable set of dots: ``vv[r] = n`` means dots ``(r, 1..n)``, plus ``cloud``.

    The representation is always compact (no cloud dot is contiguous with or covered by
    the version vector), so equal sets of dots compare equal.
    """

    __slots__ = ("cloud", "vv")

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Dot] = ()) -> None:
        versions = {r: n for r, n in (vv or {}).items() if n > 0}
        pending = set(cloud)
        for replica, counter in sorted(pending):
            if counter <= versions.get(replica, 0):
                pending.discard((replica, counter))
            elif counter == versions.get(replica, 0) + 1:
                versions[replica] = counter
                pending.discard((replica, counter))
        self.vv: dict[str, int] = dict(sorted(versions.items()))
        self.cloud: frozenset[Dot] = frozenset(pending)

    @classmethod
    def of(cls, dots: Iterable[Dot]) -> CausalContext:
        return cls(None, dots)

    def __contains__(self, dot: object) -> bool:
        if not isinstance(dot, tuple):
            return False
        replica, counter = dot
        return bool(counter <= self.vv.get(replica, 0) or dot in self.cloud)

    def next_dot(self, replica: str) -> Dot:
        """A dot never used before by ``replica`` in this context's history."""
        highest = max(
            [self.vv.get(replica, 0)] + [c for r, c in self.cloud if r == replica], default=0
        )
        return (replica, highest + 1)

    def join(self, other: CausalContext) -> CausalContext:
        vv = dict(self.vv)
        for replica, counter in other.vv.items():
            vv[replica] = max(vv.get(replica, 0), counter)
        return CausalContext(vv, self.cloud | other.cloud)

    def with_dots(self, dots: Iterable[Dot]) -> CausalContext:
        return CausalContext(self.vv, self.cloud | frozenset(dots))

    def covers(self, other: CausalContext) -> bool:
        """True when every dot of ``other`` is in this context."""
        return all(self.vv.get(r, 0) >= n for r, n in other.vv.items()) and all(
            d in self for d in other.cloud
        )

    def is_empty(self) -> bool:
        return not self.vv and not self.cloud

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalContext):
            return NotImplemented
        return self.vv == other.vv and self.cloud == other.cloud

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        cloud = sorted(self.cloud)
        return f"CausalContext(vv={self.vv!r}, cloud={cloud!r})"

    def to_payload(self) -> list[Any]:
        return [[[r, n] for r, n in self.vv.items()], [[r, c] for r, c in sorted(self.cloud)]]

    @classmethod
    def from_payload(cls, payload: Any) -> CausalContext:
        vv_items, cloud_items = payload
        vv = {}
        for replica, counter in vv_items:
            vv[check_replica(replica)] = check_counter(counter)
        cloud = [(check_replica(r), check_counter(c)) for r, c in cloud_items]
        return cls(vv, cloud)


def check_replica(replica: Any) -> str:
    if type(replica) is not str:
        raise TypeError(f"replica id must be a string, got {type(replica).__name__}")
    return validate_replica(replica)


def check_counter(counter: Any) -> int:
    # Exactly int: "1", 1.9 and True are not dot counters (they used to read as 1).
    if type(counter) is not int or not 1 <= counter < 2**63:
        raise ValueError(f"dot counter must be an integer in [1, 2^63), got {counter!r}")
    return counter


def check_dot_reuse(left: Mapping[Dot, Any], right: Mapping[Dot, Any], what: str) -> None:
    """Raise when one dot carries different payloads (``what`` names them) on two sides.

    Payloads are compared as given: callers pass canonical bytes or typed elements, so that
    ``True`` and ``1`` never count as the same.
    """
    small, large = (left, right) if len(left) <= len(right) else (right, left)
    for dot, payload in small.items():
        theirs = large.get(dot, payload)
        if theirs != payload or type(theirs) is not type(payload):
            raise DotReuseError(
                f"dot {dot[1]} of replica {dot[0]!r} names two different {what}: the replica "
                "id was reused after losing state (a restart without saved state, or a "
                "restored backup); give every such start a new id (crdt.new_replica_id)"
            )


def join_dot_sets(
    left: frozenset[Dot], left_ctx: CausalContext, right: frozenset[Dot], right_ctx: CausalContext
) -> frozenset[Dot]:
    """The causal join of two dot sets: keep common dots and the ones the other side never saw.

    A dot present on one side only and covered by the other side's context was removed there.
    """
    return (
        (left & right)
        | frozenset(d for d in left if d not in right_ctx)
        | frozenset(d for d in right if d not in left_ctx)
    )
