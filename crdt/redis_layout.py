"""How each CRDT type lies in one Redis HASH, and how a state becomes script arguments.

Pure functions, no I/O: :mod:`crdt.redis_store` runs them against a client. Every object is
one HASH (field ``#t`` = type tag) under a ``{name}`` hash tag, so each script touches a
single Cluster slot.

==============  ==========================================  ==========================
type            fields                                      merge in Redis
==============  ==========================================  ==========================
GCounter        ``<replica>`` -> decimal count              server (field-wise max)
PNCounter       ``p:<replica>``, ``n:<replica>``            server (field-wise max)
GSet            ``a:<msgpack element>`` -> "1"              server (field-wise max)
TwoPSet         ``a:<element>``, ``r:<element>``            server (field-wise max)
LWWRegister     ``w``, ``l`` (HLC), ``r`` (replica), ``v``  server (compare pairs)
ORSet           ``v:``, ``c:`` (context), ``d:<dot>``,      server (causal join)
MVRegister      ``e:<payload>`` (dot index)                 server (causal join)
ORMap           ``b`` (encoded state), ``ver``              optimistic check-and-set
==============  ==========================================  ==========================
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from crdt.base import Crdt
from crdt.codec import pack, unpack
from crdt.dots import CausalContext, Dot
from crdt.gcounter import GCounter
from crdt.gset import GSet
from crdt.hlc import Timestamp
from crdt.lwwregister import LWWRegister
from crdt.mvregister import MVRegister
from crdt.orset import ORSet
from crdt.pncounter import PNCounter
from crdt.twopset import TwoPSet

__all__ = ["SERVER_MERGED", "merge_call", "parse_hash"]

Args = list[bytes | str | int]

SERVER_MERGED: tuple[type[Crdt], ...] = (
    GCounter,
    PNCounter,
    GSet,
    TwoPSet,
    LWWRegister,
    ORSet,
    MVRegister,
)


def _dot(dot: Dot) -> str:
    return f"{dot[1]}|{dot[0]}"


def merge_call(state: Crdt) -> tuple[str, Args]:
    """The script and its type-specific arguments that join ``state`` into Redis."""
    if isinstance(state, GCounter):
        return "merge_fields", _counts("", state.counts)
    if isinstance(state, PNCounter):
        return "merge_fields", _counts("p:", state.p.counts) + _counts("n:", state.n.counts)
    if isinstance(state, GSet):
        return "merge_fields", _flags(b"a:", state.elements)
    if isinstance(state, TwoPSet):
        return "merge_fields", _flags(b"a:", state.added) + _flags(b"r:", state.removed)
    if isinstance(state, LWWRegister):
        if state.timestamp is None or state.replica is None:
            return "merge_fields", []
        ts = state.timestamp
        return "lww_merge", [ts.wall_ms, ts.logical, state.replica, pack(state.value)]
    if isinstance(state, ORSet):
        entries = [(d, pack(e)) for e, ds in state.entries.items() for d in ds]
        return "dots_merge", _context(state.context) + _entries(entries)
    if isinstance(state, MVRegister):
        entries = [(d, pack(v)) for d, v in state.entries.items()]
        return "dots_merge", _context(state.context) + _entries(entries)
    raise TypeError(f"{type(state).__name__} is merged by check-and-set, not by a script")


def _counts(prefix: str, counts: dict[str, int]) -> Args:
    out: Args = []
    for replica, count in counts.items():
        out += [prefix + replica, str(count)]
    return out


def _flags(prefix: bytes, elements: frozenset[Any]) -> Args:
    out: Args = []
    for element in elements:
        out += [prefix + pack(element), "1"]
    return out


def _context(ctx: CausalContext) -> Args:
    out: Args = [len(ctx.vv)]
    for replica, counter in ctx.vv.items():
        out += [replica, counter]
    out.append(len(ctx.cloud))
    out += [_dot(d) for d in sorted(ctx.cloud)]
    return out


def _entries(entries: list[tuple[Dot, bytes]]) -> Args:
    out: Args = []
    for dot, payload in entries:
        out += [_dot(dot), payload]
    return out


def _parse_dot(raw: bytes) -> Dot:
    counter, replica = raw.decode().split("|", 1)
    return (replica, int(counter))


def parse_hash(kind: type[Crdt], fields: dict[bytes, bytes]) -> Crdt:
    """Rebuild a Python state from the HASH a script maintains."""
    body = {k: v for k, v in fields.items() if k != b"#t"}
    if kind is GCounter:
        return GCounter({k.decode(): int(v) for k, v in body.items()})
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
    if kind in (ORSet, MVRegister):
        vv = {k[2:].decode(): int(v) for k, v in body.items() if k.startswith(b"v:")}
        cloud = [
            (k[2:].decode(), int(c))
            for k, v in body.items()
            if k.startswith(b"c:")
            for c in v.split(b",")
        ]
        ctx = CausalContext(vv, cloud)
        dots = {_parse_dot(k[2:]): v for k, v in body.items() if k.startswith(b"d:")}
        if kind is MVRegister:
            return MVRegister({d: unpack(v) for d, v in dots.items()}, ctx)
        grouped: dict[Any, set[Dot]] = defaultdict(set)
        for dot, payload in dots.items():
            grouped[unpack(payload)].add(dot)
        return ORSet({e: frozenset(ds) for e, ds in grouped.items()}, ctx)
    if b"b" not in body:
        return kind()
    return kind.from_bytes(body[b"b"])
