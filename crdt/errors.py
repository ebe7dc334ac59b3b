"""Exceptions raised by the ``crdt`` package.

Every error derives from :class:`idemkit.errors.IdemkitError`::

    IdemkitError
    └── CrdtError
        ├── CrdtCodecError (idemkit CodecError)   bytes that are corrupt, foreign or of an unknown
        │                                         version, or of another CRDT type than asked for
        ├── InvalidReplicaIdError (ValueError)    a replica id that is empty, too long or has
        │                                         characters outside [A-Za-z0-9_.-]
        ├── UnsupportedValueError (TypeError)     an element or register value msgpack cannot
        │                                         carry exactly (or, for set elements, not hashable)
        ├── TypeMismatchError (TypeError)         merging two different CRDT types, or a Redis key
        │                                         that holds another type
        ├── TimestampReuseError                   two LWW writes with the same (HLC, replica) but
        │                                         different values: a replica id was reused
        ├── DotReuseError                         one dot names two different elements or values:
        │                                         a replica id was reused after losing state
        ├── ClockDriftError (ValueError)          an LWW timestamp further ahead of this clock than
        │                                         max_drift_ms
        ├── TombstonedElementError (ValueError)   re-adding an element a TwoPSet already removed
        └── StoreConflictError                    an optimistic (check-and-set) merge kept losing
                                                  the race and gave up
"""

from __future__ import annotations

from idemkit.errors import CodecError, IdemkitError

__all__ = [
    "ClockDriftError",
    "CrdtCodecError",
    "CrdtError",
    "DotReuseError",
    "InvalidReplicaIdError",
    "StoreConflictError",
    "TimestampReuseError",
    "TombstonedElementError",
    "TypeMismatchError",
    "UnsupportedValueError",
]


class CrdtError(IdemkitError):
    """Root of the errors the ``crdt`` package raises on purpose."""


class CrdtCodecError(CrdtError, CodecError):
    """Bytes that do not decode to the requested CRDT; never a silently wrong value."""


class InvalidReplicaIdError(CrdtError, ValueError):
    """Replica ids are 1..64 characters from ``[A-Za-z0-9_.-]``; pick a short stable one."""


class UnsupportedValueError(CrdtError, TypeError):
    """A value the CRDT cannot store exactly; the message names the allowed types."""


class TypeMismatchError(CrdtError, TypeError):
    """Two different CRDT types met (in a merge, a map entry or a Redis key)."""


class TimestampReuseError(CrdtError):
    """Two LWW writes share (HLC, replica) but differ in value: never reuse a replica id."""


class DotReuseError(CrdtError):
    """One dot carries two different elements or values: a replica id was reused.

    Replicas mint dots ``(replica, n)`` from their own history; one that lost its state and
    kept its id mints the same dots again. Give every start without saved state a fresh id
    (:func:`crdt.new_replica_id`; the Redis store does it by itself).
    """


class ClockDriftError(CrdtError, ValueError):
    """An LWW timestamp lies further in the future than ``max_drift_ms``; fix that clock."""


class TombstonedElementError(CrdtError, ValueError):
    """A TwoPSet never re-adds a removed element; use ORSet when elements come back."""


class StoreConflictError(CrdtError):
    """A check-and-set merge lost the race too many times; retry later or reduce contention."""
