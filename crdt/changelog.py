"""The change-log entry format: what every write script appends to its shard's stream.

An entry is a flat stream record. Common fields: ``v`` format version (1), ``n`` object
name, ``t`` type tag (0 = unknown), ``e`` the object's epoch after the change, ``k`` kind.
Then, by kind:

====  ==================================================  =================================
kind  fields                                              replayed with
====  ==================================================  =================================
x     (none): the object moved to epoch ``e`` (deleted,   ``touch``
      expired, or deleted outside the API)
t     ``X`` deadline (ms, server clock)                   ``touch`` with the deadline
f     ``f:<field>`` -> decimal count or flag               ``merge_fields``
l     ``w``, ``l``, ``r``, ``val``: an LWW write            ``lww_merge``
d     ``+<dot>`` -> payload (live), ``-<dot>`` (seen)       ``dots_delta``
u     (none): a chunked join grew the context             copy the whole object
o     (none): a check-and-set type changed                copy the whole object
====  ==================================================  =================================

Replaying an entry is a join with a piece of the source's state, so entries may be replayed
twice, late, or after newer ones. An entry this code cannot read (newer format, unknown
type or kind) raises :class:`~crdt.errors.CrdtCodecError`; the syncer skips that object.
"""

from __future__ import annotations

from collections.abc import Mapping

from crdt.base import Crdt
from crdt.errors import CrdtCodecError
from crdt.redis_layout import Arg, Call

__all__ = ["ENTRY_VERSION", "entry_call", "entry_name"]

ENTRY_VERSION = b"1"


def entry_name(fields: Mapping[bytes, bytes]) -> str:
    raw = fields.get(b"n")
    if raw is None:
        raise CrdtCodecError("change-log entry without an object name")
    return raw.decode()


def entry_call(
    fields: Mapping[bytes, bytes], types: Mapping[int, type[Crdt]], max_drift_ms: int
) -> Call | None:
    """The script call that replays one entry, or None when the whole object must be copied."""
    name = entry_name(fields)
    version = fields.get(b"v")
    if version != ENTRY_VERSION:
        raise CrdtCodecError(
            f"change-log entry for {name!r} has format version {version!r}; this code reads "
            f"{ENTRY_VERSION!r}: upgrade idemkit in this region"
        )
    try:
        return _call(name, fields, types, max_drift_ms)
    except (KeyError, ValueError) as exc:
        raise CrdtCodecError(f"corrupt change-log entry for {name!r}: {exc!r}") from None


def _call(
    name: str, fields: Mapping[bytes, bytes], types: Mapping[int, type[Crdt]], max_drift_ms: int
) -> Call | None:
    tag = int(fields[b"t"])
    epoch = fields[b"e"].decode()
    kind = fields[b"k"]
    if tag != 0 and tag not in types:
        raise CrdtCodecError(
            f"{name!r} has unknown type tag {tag}: written by a newer idemkit? upgrade this side"
        )
    type_tag = "" if tag == 0 else str(tag)
    if kind == b"x":
        return Call("touch", name, type_tag, epoch)
    if kind == b"t":
        return Call("touch", name, type_tag, epoch, fields[b"X"].decode())
    if kind == b"f":
        args: list[Arg] = []
        for field, value in fields.items():
            if field.startswith(b"f:"):
                args += [field[2:], value]
        return Call("merge_fields", name, type_tag, epoch, "", tuple(args))
    if kind == b"l":
        lww = (fields[b"w"], fields[b"l"], fields[b"r"], fields[b"val"], str(max_drift_ms))
        return Call("lww_merge", name, type_tag, epoch, "", lww)
    if kind == b"d":
        live = [(f[1:], v) for f, v in fields.items() if f.startswith(b"+")]
        seen = [f[1:] for f in fields if f.startswith(b"-")]
        flat: list[Arg] = [len(live), *(x for pair in live for x in pair), *seen]
        return Call("dots_delta", name, type_tag, epoch, "", tuple(flat))
    if kind in (b"u", b"o"):
        return None
    raise CrdtCodecError(f"change-log entry for {name!r} has unknown kind {kind!r}")
