"""Joining a whole object into Redis in bounded steps, never one big script.

Two sources: a Python state (``CrdtStore.merge`` of a full state), or the same object in
another region (the syncer's full passes, retries and ``u``/``o`` change-log entries).
Plans are generators that yield ``(side, Call)`` and receive the raw reply, so the async
store, the blocking store and the syncer (two stores) all drive the same code.

A dotted type (ORSet, MVRegister) is joined in three phases, each a series of chunks that
are themselves joins with a piece of the source, so stopping anywhere leaves a valid state:

1. add the source's live dots the target never saw (without their context yet: dots come in
   hash order, and marking them one by one would grow a large cloud of out-of-order dots;
   a dot the target drops is always marked seen, so none can come back);
2. drop the live dots of the target that the source has seen but no longer holds (the
   target's dots are scanned in chunks; for a Redis source each chunk is probed there);
3. add the source's context to the target's, without touching live dots (``ctx_union``,
   logged as ``u`` so that peers compare the whole object with this one in turn).

For a Redis source the context is read *before* the live dots, so a dot in that context
that the scan does not return was removed at the source by then. Every chunk read at the
source carries its epoch; if the epoch moves during a copy, :class:`ObjectMovedError`
tells the caller to start again. Chunked writes log a small ``u`` entry instead of their
chunk (option ``u``), so change-log entries stay small; peers then copy the whole object.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Any

from crdt.base import Crdt
from crdt.dots import CausalContext, Dot
from crdt.errors import CrdtCodecError, CrdtError, StoreConflictError
from crdt.lwwregister import LWWRegister
from crdt.redis_layout import (
    DOTTED,
    FIELD_TYPES,
    Arg,
    Call,
    ScanPage,
    chunks,
    dot_str,
    field_pairs,
    lww_args,
    parse_dot,
    parse_read,
    parse_reply,
    parse_scan,
    payload_of,
)

__all__ = [
    "DST",
    "SRC",
    "ObjectMovedError",
    "Plan",
    "cas_plan",
    "copy_plan",
    "read_version",
    "state_plan",
]

SRC, DST = "src", "dst"
Plan = Generator[tuple[str, Call], Any, bool]


class ObjectMovedError(CrdtError):
    """The source object changed epoch during a chunked copy; copy it again."""


def _flat(pairs: Any) -> list[Arg]:
    return [x for pair in pairs for x in pair]


CHUNKED = "u"  # log a summary entry: the chunk itself would make a large stream entry
LIVE_FIRST = "ul"  # and add live dots without their context (phase 1)
# A copy's chunks log nothing: its last step (ctx_union, or a 'touch' with option 's')
# logs one 'u' if anything changed, and an interrupted copy is always run again.
QUIET, QUIET_LIVE_FIRST, SIGNAL = "n", "nl", "s"


def _dots_delta(
    name: str, tag: str, epoch: str, live: Any, rest: Any = (), options: str = CHUNKED
) -> Call:
    args: list[Arg] = [len(live), *_flat(live), *rest]
    return Call("dots_delta", name, tag, epoch, "", tuple(args), options)


def _context_calls(name: str, tag: str, epoch: str, ctx: CausalContext, chunk: int) -> list[Call]:
    calls = []
    for part in chunks(list(ctx.vv.items()), chunk):
        args: list[Arg] = [len(part), *_flat((r, str(n)) for r, n in part)]
        calls.append(Call("ctx_union", name, tag, epoch, "", tuple(args), CHUNKED))
    for cloud in chunks(sorted(ctx.cloud), chunk):
        calls.append(Call("ctx_union", name, tag, epoch, "", (0, *map(dot_str, cloud)), CHUNKED))
    return calls


def state_plan(name: str, state: Crdt, *, chunk: int, max_drift_ms: int) -> Plan:
    """Join a Python state (full, or any delta) into the stored object."""
    tag, epoch = str(state.TYPE_TAG), str(state.epoch)
    if isinstance(state, FIELD_TYPES):
        pairs = field_pairs(state)
        if not pairs:
            return parse_reply((yield DST, Call("touch", name, tag, epoch))).reset
        changed = False
        options = CHUNKED if len(pairs) > chunk else ""
        for part in chunks(pairs, chunk):
            call = Call("merge_fields", name, tag, epoch, "", tuple(_flat(part)), options)
            changed |= parse_reply((yield DST, call)).changed
        return changed
    if isinstance(state, LWWRegister):
        if state.timestamp is None:
            return parse_reply((yield DST, Call("touch", name, tag, epoch))).reset
        call = Call("lww_merge", name, tag, epoch, "", lww_args(state, max_drift_ms))
        return parse_reply((yield DST, call)).changed
    if isinstance(state, DOTTED):
        return (yield from _dotted_state_plan(name, state, chunk))
    return (yield from cas_plan(name, type(state), lambda current: current | state))


def _live_dots(state: Crdt) -> list[tuple[str, bytes]]:
    kind = type(state)
    entries: Mapping[Any, Any] = state.entries  # type: ignore[attr-defined]
    if kind is DOTTED[0]:  # ORSet: element -> dots
        return [(dot_str(d), payload_of(kind, e)) for e, ds in entries.items() for d in sorted(ds)]
    return [(dot_str(d), payload_of(kind, v)) for d, v in entries.items()]


def _dotted_state_plan(name: str, state: Crdt, chunk: int) -> Plan:
    tag, epoch = str(state.TYPE_TAG), str(state.epoch)
    ctx = state.causal_context
    assert ctx is not None
    live = _live_dots(state)
    if len(live) + sum(ctx.vv.values()) + len(ctx.cloud) <= chunk:
        # Small enough to spell the whole context as dots: one exact join, one script.
        held = {d for d, _ in live}
        rest = [s for s in map(dot_str, _expand(ctx)) if s not in held]
        call = _dots_delta(name, tag, epoch, live, rest, options="")
        return parse_reply((yield DST, call)).changed
    first = parse_reply((yield DST, Call("touch", name, tag, epoch)))
    if first.note == "stale":
        return False
    changed = first.reset
    for part in chunks(live, chunk):
        call = _dots_delta(name, tag, epoch, part, options=LIVE_FIRST)
        changed |= parse_reply((yield DST, call)).changed
    held = {d for d, _ in live}
    cursor = b"0"
    while True:
        page = parse_scan((yield DST, Call("scan", name, args=(cursor, chunk, "d:*"))))
        if page.epoch != state.epoch:
            return changed  # the stored object moved to a newer epoch meanwhile
        gone = [
            f[2:] for f, _ in page.fields if parse_dot(f[2:]) in ctx and f[2:].decode() not in held
        ]
        if gone:
            changed |= parse_reply((yield DST, _dots_delta(name, tag, epoch, [], gone))).changed
        cursor = page.cursor
        if cursor == b"0":
            break
    for call in _context_calls(name, tag, epoch, ctx, chunk):
        changed |= parse_reply((yield DST, call)).changed
    return changed


def _expand(ctx: CausalContext) -> list[Dot]:
    return [(r, n) for r, top in ctx.vv.items() for n in range(1, top + 1)] + sorted(ctx.cloud)


def read_version(raw: Any) -> bytes:
    """The check-and-set version in a ``read.lua`` reply (b"0" when absent)."""
    flat = raw[2]
    fields = dict(zip(flat[0::2], flat[1::2], strict=True))
    version: bytes = fields.get(b"#v", b"0")
    return version


def cas_plan(
    name: str,
    kind: type[Crdt],
    transform: Callable[[Crdt], Crdt | None],
    attempts: int = 100,
) -> Plan:
    """Read, transform, write back if the version did not move; else again.

    ``transform`` gets the current state and returns the new one (or mutates it in place
    and returns None). Nothing is written when the state did not change.
    """
    tag = str(kind.TYPE_TAG)
    for _ in range(attempts):
        raw = yield DST, Call("read", name)
        current = parse_read(kind, raw)
        before = current.copy()
        result = transform(current)
        new = current if result is None else result
        version = read_version(raw)
        if new == before and version != b"0":
            return False  # nothing new: no write, no change-log entry (ends sync echoes)
        call = Call("cas", name, tag, "", "", (version, new.to_bytes(), str(new.epoch)))
        if parse_reply((yield DST, call)).result == 1:
            return True
    raise StoreConflictError(f"{attempts} check-and-set attempts on {name!r} all lost the race")


def _probe(raw: Any) -> tuple[int | None, int | None, int | None, list[bool]]:
    tag, epoch, deadline, live = raw
    as_int = [None if x is None else int(x) for x in (tag, epoch, deadline)]
    return as_int[0], as_int[1], as_int[2], [bool(x) for x in live]


def _same_epoch(page: ScanPage | int | None, epoch: int, name: str) -> None:
    found = page.epoch if isinstance(page, ScanPage) else page
    if found != epoch:
        raise ObjectMovedError(f"{name!r} changed epoch at the source during the copy")


def copy_plan(
    name: str,
    *,
    chunk: int,
    max_drift_ms: int,
    types: Mapping[int, type[Crdt]],
) -> Plan:
    """Join the source region's object ``name`` into the target region, chunk by chunk."""
    tag_int, epoch_int, deadline_int, _ = _probe((yield SRC, Call("probe", name)))
    if epoch_int is None:
        return False  # nothing at the source (never there, or its data key is gone)
    if tag_int is None:
        # A tombstone of an object whose type this region never learned: the epoch alone.
        call = Call(
            "touch", name, "", str(epoch_int), "" if deadline_int is None else str(deadline_int)
        )
        return parse_reply((yield DST, call)).reset
    kind = types.get(tag_int)
    if kind is None:
        raise CrdtCodecError(
            f"{name!r} has unknown type tag {tag_int}: written by a newer idemkit?"
        )
    tag, epoch = str(tag_int), str(epoch_int)
    deadline = "" if deadline_int is None else str(deadline_int)
    first = parse_reply((yield DST, Call("touch", name, tag, epoch, deadline)))
    if first.note == "stale" or first.epoch != epoch_int:
        return first.reset  # the target is in a newer epoch, or the deadline had passed
    changed = first.reset
    if kind in DOTTED:
        # A target that held no dots has none to drop: skip phase 2 (a first sync, or a
        # region that came back empty, copies each object once instead of twice).
        had_dots = int(first.result) > 0
        changed |= yield from _copy_dotted(name, tag, epoch_int, chunk, had_dots)
    elif kind in FIELD_TYPES or kind is LWWRegister:
        fields: dict[bytes, bytes] = {}
        cursor = b"0"
        while True:
            page = parse_scan((yield SRC, Call("scan", name, args=(cursor, chunk, "*"))))
            _same_epoch(page, epoch_int, name)
            pairs = [(f, v) for f, v in page.fields if not f.startswith(b"#")]
            if kind is LWWRegister:
                fields.update(pairs)
            elif pairs:
                call = Call("merge_fields", name, tag, epoch, "", tuple(_flat(pairs)), QUIET)
                changed |= parse_reply((yield DST, call)).changed
            cursor = page.cursor
            if cursor == b"0":
                break
        if kind is not LWWRegister and changed:
            yield DST, Call("touch", name, tag, epoch, options=SIGNAL)
        if kind is LWWRegister and b"w" in fields:
            args = (fields[b"w"], fields[b"l"], fields[b"r"], fields[b"v"], str(max_drift_ms))
            changed |= parse_reply(
                (yield DST, Call("lww_merge", name, tag, epoch, "", args))
            ).changed
    else:
        source = parse_read(kind, (yield SRC, Call("read", name)))
        _same_epoch(source.epoch, epoch_int, name)
        changed |= yield from cas_plan(name, kind, lambda current: current | source)
    return changed


def _copy_dotted(name: str, tag: str, epoch_int: int, chunk: int, had_dots: bool) -> Plan:
    epoch = str(epoch_int)
    vv: dict[str, int] = {}
    cloud: list[Dot] = []
    cursor = b"0"
    while True:  # the context first: see the module docstring
        page = parse_scan(
            (yield SRC, Call("scan", name, args=(cursor, chunk, "*"), scan_context=True))
        )
        _same_epoch(page, epoch_int, name)
        for field, value in page.fields:
            if field.startswith(b"v:"):
                vv[field[2:].decode()] = int(value)
            elif field.startswith(b"c:"):
                cloud.append(parse_dot(field[2:]))
        cursor = page.cursor
        if cursor == b"0":
            break
    context = CausalContext(vv, cloud)
    changed = False
    cursor = b"0"
    while True:
        page = parse_scan((yield SRC, Call("scan", name, args=(cursor, chunk, "d:*"))))
        _same_epoch(page, epoch_int, name)
        live = [(f[2:], v) for f, v in page.fields]
        if live:
            call = _dots_delta(name, tag, epoch, live, options=QUIET_LIVE_FIRST)
            reply = parse_reply((yield DST, call))
            if reply.note == "stale":
                return changed
            changed |= reply.changed
        cursor = page.cursor
        if cursor == b"0":
            break
    cursor = b"0"
    while had_dots:
        page = parse_scan((yield DST, Call("scan", name, args=(cursor, chunk, "d:*"))))
        if page.epoch != epoch_int:
            return changed
        seen = [f[2:] for f, _ in page.fields if parse_dot(f[2:]) in context]
        if seen:
            _, at_source, _, live_flags = _probe((yield SRC, Call("probe", name, args=tuple(seen))))
            _same_epoch(at_source, epoch_int, name)
            gone = [d for d, alive in zip(seen, live_flags, strict=True) if not alive]
            if gone:
                changed |= parse_reply((yield DST, _dots_delta(name, tag, epoch, [], gone))).changed
        cursor = page.cursor
        if cursor == b"0":
            break
    for call in _context_calls(name, tag, epoch, context, chunk):
        changed |= parse_reply((yield DST, call)).changed
    return changed
