"""Where each CRDT lives in Redis, and how states become script calls and back. No I/O.

Objects are spread over ``shards`` (default 64) by a CRC-32 of their name. Everything of one
shard shares the hash tag ``{<shard>}``, so every script touches a single Cluster slot *and*
the shard's change stream: sync works on Redis Cluster with the change log on.

=====================  =====================================================================
key                    content
=====================  =====================================================================
``P{s}d:<name>``       data HASH: ``#t`` type tag, ``#E`` epoch, ``#X`` deadline, ``#i``/``#r``
                       incarnation, then the type's fields (table below)
``P{s}c:<name>``       causal context HASH of ORSet / MVRegister: ``v:<replica>`` -> n,
                       ``c:<dot>`` -> 1 (dots seen out of order)
``P{s}idx``            index HASH of the shard: name -> epoch. Lists the shard's objects
                       for full passes, and remembers an object whose data key was deleted
                       outside the API (that becomes a delete instead of being undone)
``P{s}log``            change STREAM of the shard: one entry per change, carrying the delta
=====================  =====================================================================

==============  ==================================================  ===========================
type            data fields                                         merge in Redis
==============  ==================================================  ===========================
GCounter        ``p:<replica>`` -> decimal count                    field-wise max
PNCounter       ``p:<replica>``, ``n:<replica>``                    field-wise max
GSet            ``a:<msgpack element>`` -> 1                        field-wise max
TwoPSet         ``a:<element>``, ``r:<element>``                    field-wise max
LWWRegister     ``w``, ``l`` (HLC, decimals), ``r`` replica, ``v``  compare (HLC, replica)
ORSet           ``d:<dot>`` -> element, ``e:<element>`` -> dots     dot-set join, O(delta)
MVRegister      ``d:<dot>`` -> value, ``e:<value>`` -> dots         dot-set join, O(delta)
ORMap           ``b`` encoded state, ``#v`` version                 check-and-set in Python
==============  ==================================================  ===========================
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from crdt.base import Crdt
from crdt.codec import canonical_key, pack, pack_value, unpack
from crdt.dots import CausalContext, Dot
from crdt.errors import CrdtCodecError
from crdt.gcounter import GCounter
from crdt.gset import GSet
from crdt.hlc import Timestamp
from crdt.lwwregister import LWWRegister
from crdt.mvregister import MVRegister
from crdt.ormap import ORMap
from crdt.orset import ORSet
from crdt.pncounter import PNCounter
from crdt.twopset import TwoPSet

__all__ = [
    "BLOB_TYPES",
    "DEFAULT_SHARDS",
    "DOTTED",
    "FIELD_TYPES",
    "Call",
    "Layout",
    "ObjectKeys",
    "Reply",
    "ScanPage",
    "chunks",
    "dot_str",
    "field_pairs",
    "lww_args",
    "parse_dot",
    "parse_read",
    "parse_reply",
    "parse_scan",
    "payload_of",
]

DEFAULT_SHARDS = 64
FIELD_TYPES: tuple[type[Crdt], ...] = (GCounter, PNCounter, GSet, TwoPSet)
DOTTED: tuple[type[Crdt], ...] = (ORSet, MVRegister)
BLOB_TYPES: tuple[type[Crdt], ...] = (ORMap,)

Arg = bytes | str | int


@dataclass(frozen=True)
class ObjectKeys:
    data: str
    context: str
    index: str
    log: str


class Layout:
    """Key names for one prefix and shard count (every store and syncer must agree)."""

    def __init__(self, prefix: str, shards: int) -> None:
        self.prefix = prefix
        self.shards = shards

    def shard_of(self, name: str) -> int:
        return zlib.crc32(name.encode()) % self.shards

    def tag(self, shard: int) -> str:
        return f"{self.prefix}{{{shard}}}"

    def keys(self, name: str) -> ObjectKeys:
        tag = self.tag(self.shard_of(name))
        return ObjectKeys(f"{tag}d:{name}", f"{tag}c:{name}", f"{tag}idx", f"{tag}log")

    def index_key(self, shard: int) -> str:
        return f"{self.tag(shard)}idx"

    def log_key(self, shard: int) -> str:
        return f"{self.tag(shard)}log"


@dataclass(frozen=True)
class Call:
    """One script run against one object. ``epoch``/``deadline`` are those of the incoming
    state ('' for a local write); ``options`` are the write options of ``_prelude.lua``
    ('u': log a summary entry, 'l': live dots first); ``scan_context`` picks the HASH a
    ``scan`` reads."""

    script: str
    name: str
    tag: str = ""
    epoch: str = ""
    deadline: str = ""
    args: tuple[Arg, ...] = ()
    options: str = ""
    scan_context: bool = False


@dataclass(frozen=True)
class Reply:
    """What a write script answered: its result, the object's epoch after it, a note
    ('', 'outside-delete', 'expired' or 'stale') and whether the epoch or deadline moved."""

    result: Any
    epoch: int
    note: str
    reset: bool

    @property
    def changed(self) -> bool:
        """For merge scripts (whose result counts what grew): did the stored state change?
        (``touch`` returns how many type fields the object holds: only ``reset`` counts.)"""
        return self.reset or (isinstance(self.result, int) and self.result > 0)


@dataclass(frozen=True)
class ScanPage:
    tag: int | None
    epoch: int | None
    deadline: int | None
    cursor: bytes
    fields: list[tuple[bytes, bytes]]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _int_or_none(raw: Any) -> int | None:
    return None if raw is None else int(raw)


def parse_reply(raw: Any) -> Reply:
    result, epoch, note, reset = raw
    return Reply(result, int(epoch), _text(note), bool(reset))


def parse_scan(raw: Any) -> ScanPage:
    tag, epoch, deadline, cursor, flat = raw
    fields = list(zip(flat[0::2], flat[1::2], strict=True))
    cursor = cursor if isinstance(cursor, bytes) else str(cursor).encode()
    return ScanPage(_int_or_none(tag), _int_or_none(epoch), _int_or_none(deadline), cursor, fields)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dot_str(dot: Dot) -> str:
    return f"{dot[1]}|{dot[0]}"


def parse_dot(raw: bytes | str) -> Dot:
    counter, replica = _text(raw).split("|", 1)
    return (replica, int(counter))


def field_pairs(state: Crdt) -> list[tuple[bytes, str]]:
    """The data fields of a counter or flag set, as (field, value) pairs."""
    if isinstance(state, GCounter):
        return [(b"p:" + r.encode(), str(n)) for r, n in state.counts.items()]
    if isinstance(state, PNCounter):
        return field_pairs(state.p) + [
            (b"n:" + r.encode(), str(n)) for r, n in state.n.counts.items()
        ]
    if isinstance(state, GSet):
        return [(b"a:" + pack(e), "1") for e in sorted(state.elements, key=canonical_key)]
    if isinstance(state, TwoPSet):
        added = [(b"a:" + pack(e), "1") for e in sorted(state.added, key=canonical_key)]
        return added + [(b"r:" + pack(e), "1") for e in sorted(state.removed, key=canonical_key)]
    raise TypeError(f"{type(state).__name__} is not stored as fields")


def lww_args(register: LWWRegister, max_drift_ms: int) -> tuple[Arg, ...]:
    assert register.timestamp is not None and register.replica is not None
    ts = register.timestamp
    return (
        str(ts.wall_ms),
        str(ts.logical),
        register.replica,
        pack_value(register.value),
        str(max_drift_ms),
    )


def payload_of(kind: type[Crdt], item: Any) -> bytes:
    """Bytes stored for a dot: the element of an ORSet, the value of an MVRegister."""
    return pack(item) if kind is ORSet else pack_value(item)


def _fields(flat: list[Any]) -> dict[bytes, bytes]:
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def parse_read(kind: type[Crdt], raw: Any) -> Crdt:
    """The state ``read.lua`` returned, as the user should see it.

    An object whose deadline has passed reads as empty in the next epoch (the next write
    makes that real), and so does one whose data key was deleted outside the API.
    """
    now, known, data_flat, context_flat = raw
    data, context = _fields(data_flat), _fields(context_flat)
    tag = data.get(b"#t")
    if tag is not None and int(tag) != kind.TYPE_TAG:
        raise TypeError(int(tag))
    if b"#E" not in data:
        state = kind()
        if known is not None:
            state.epoch = int(known) + 1
        return state
    epoch = int(data[b"#E"])
    deadline = data.get(b"#X")
    if deadline is not None and int(deadline) <= int(now):
        state = kind()
        state.epoch = epoch + 1
        return state
    state = _parse_fields(kind, {k: v for k, v in data.items() if not k.startswith(b"#")}, context)
    state.epoch = epoch
    return state


def _parse_fields(kind: type[Crdt], body: dict[bytes, bytes], context: dict[bytes, bytes]) -> Crdt:
    try:
        if kind is GCounter:
            return GCounter(
                {k[2:].decode(): int(v) for k, v in body.items() if k.startswith(b"p:")}
            )
        if kind is PNCounter:
            p = {k[2:].decode(): int(v) for k, v in body.items() if k.startswith(b"p:")}
            n = {k[2:].decode(): int(v) for k, v in body.items() if k.startswith(b"n:")}
            return PNCounter(p, n)
        if kind is GSet:
            return GSet(unpack(k[2:]) for k in body if k.startswith(b"a:"))
        if kind is TwoPSet:
            added = [unpack(k[2:]) for k in body if k.startswith(b"a:")]
            return TwoPSet(added, [unpack(k[2:]) for k in body if k.startswith(b"r:")])
        if kind is LWWRegister:
            if b"w" not in body:
                return LWWRegister()
            ts = Timestamp(int(body[b"w"]), int(body[b"l"]))
            return LWWRegister(unpack(body[b"v"]), ts, body[b"r"].decode())
        if kind in DOTTED:
            return _parse_dotted(kind, body, context)
        if b"b" not in body:
            return kind()
        return kind.from_bytes(body[b"b"])
    except CrdtCodecError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise CrdtCodecError(f"corrupt {kind.__name__} in Redis: {exc}") from None


def _parse_dotted(kind: type[Crdt], body: dict[bytes, bytes], context: dict[bytes, bytes]) -> Crdt:
    vv = {k[2:].decode(): int(v) for k, v in context.items() if k.startswith(b"v:")}
    cloud = [parse_dot(k[2:]) for k in context if k.startswith(b"c:")]
    ctx = CausalContext(vv, cloud)
    dots = {parse_dot(k[2:]): v for k, v in body.items() if k.startswith(b"d:")}
    if kind is MVRegister:
        return MVRegister({d: unpack(v) for d, v in dots.items()}, ctx)
    grouped: dict[Any, set[Dot]] = defaultdict(set)
    for dot, payload in dots.items():
        grouped[unpack(payload)].add(dot)
    return ORSet({e: frozenset(ds) for e, ds in grouped.items()}, ctx)
