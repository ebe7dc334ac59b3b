"""Conflict-free replicated data types, with Redis storage and multi-region sync."""

from __future__ import annotations

from crdt.base import Crdt, decode
from crdt.delta import DeltaMessage
from crdt.dots import CausalContext, Dot
from crdt.errors import (
    ClockDriftError,
    CrdtCodecError,
    CrdtError,
    DotReuseError,
    InvalidReplicaIdError,
    StoreConflictError,
    TimestampReuseError,
    TombstonedElementError,
    TypeMismatchError,
    UnsupportedValueError,
)
from crdt.gcounter import GCounter
from crdt.gset import GSet
from crdt.hlc import HybridClock, Timestamp
from crdt.incarnation import new_replica_id, region_of
from crdt.lwwregister import LWWRegister
from crdt.mvregister import MVRegister
from crdt.ormap import ORMap
from crdt.orset import ORSet
from crdt.pncounter import PNCounter
from crdt.redis_store import CrdtStore, SyncCrdtStore
from crdt.sync import RegionSyncer, Skipped, SyncReport
from crdt.twopset import TwoPSet

__all__ = [
    "CausalContext",
    "ClockDriftError",
    "Crdt",
    "CrdtCodecError",
    "CrdtError",
    "CrdtStore",
    "DeltaMessage",
    "Dot",
    "DotReuseError",
    "GCounter",
    "GSet",
    "HybridClock",
    "InvalidReplicaIdError",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "ORSet",
    "PNCounter",
    "RegionSyncer",
    "Skipped",
    "StoreConflictError",
    "SyncCrdtStore",
    "SyncReport",
    "Timestamp",
    "TimestampReuseError",
    "TombstonedElementError",
    "TwoPSet",
    "TypeMismatchError",
    "UnsupportedValueError",
    "decode",
    "new_replica_id",
    "region_of",
]
