"""Anti-entropy between independent Redis deployments (regions).

Every write script appends its delta to the shard's change stream (see
:mod:`crdt.changelog`). For each ordered pair of regions (src, dst) the syncer reads src's
streams from cursors kept *in dst* (one per shard) and replays the entries in dst, one small
script per entry, so a sync round after one add costs the same whatever the size of the set.
Replays are joins: a crash between a replay and the cursor update only repeats work. A replay
that changes dst is logged in dst's stream, so updates also travel through a third region;
one that changes nothing is not, so echoes stop.

Full pass: when a shard's stream no longer holds everything after the cursor (trimmed past
it, rolled back, recreated, or dst has no cursor yet), the pair copies every object of that
shard (listed by the shard index) with the chunked join of :mod:`crdt.object_merge`, then
moves the cursor to where the stream stood when the pass began. Progress is kept in dst, so
a pass cut short by the deadline resumes in the next round.

Isolation: an object that cannot be merged (unknown type, newer format, a name holding two
types, clock drift, dot reuse) is recorded in dst as *skipped* with the reason, reported in
:class:`SyncReport` and by a ``crdt.skip`` event, and passed over: the cursor moves on and
every other object keeps syncing. :meth:`RegionSyncer.skipped` lists them,
:meth:`RegionSyncer.retry` copies one again (once fixed) and forgets it on success.

Liveness: pairs run concurrently, each under ``pair_timeout``, so a hung region delays the
others by at most that; it is reported (``timed_out``) and caught up later from its cursors.
:meth:`RegionSyncer.run` goes further: every pair loops on its own, so a slow or hung pair
never holds up the next round of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from crdt.base import Crdt, registered_types
from crdt.changelog import entry_call, entry_name
from crdt.errors import CrdtError
from crdt.hlc import DEFAULT_MAX_DRIFT_MS
from crdt.object_merge import DST, ObjectMovedError, Plan, copy_plan
from crdt.redis_layout import DEFAULT_SHARDS
from crdt.redis_store import DEFAULT_PREFIX, CrdtStore
from idemkit.errors import ConfigurationError, StoreUnavailableError
from idemkit.observe import Event, Observer, Stopwatch, emit

__all__ = ["RegionSyncer", "Skipped", "SyncReport"]

log = logging.getLogger("idemkit.crdt")

Pair = tuple[str, str]
_COPY_ATTEMPTS = 3
_NAMES_PER_STEP = 20  # full-pass progress is saved after this many objects


@dataclass(frozen=True)
class Skipped:
    """An object a pair could not merge; kept in dst until :meth:`RegionSyncer.retry`."""

    src: str
    dst: str
    name: str
    reason: str


@dataclass
class SyncReport:
    """What one round did, per (src, dst) pair.

    ``shipped`` counts change-log entries replayed and objects copied by full passes;
    ``pending`` lists pairs with work left (a backlog beyond ``batch``, or a full pass not
    finished before the deadline).
    """

    shipped: dict[Pair, int] = field(default_factory=dict)
    full_passes: list[Pair] = field(default_factory=list)
    unreachable: list[Pair] = field(default_factory=list)
    timed_out: list[Pair] = field(default_factory=list)
    pending: list[Pair] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: dict[Pair, str] = field(default_factory=dict)
    durations: dict[Pair, float] = field(default_factory=dict)

    @property
    def quiet(self) -> bool:
        """Nothing moved and every pair finished: the regions agree (as of this round)."""
        failed = self.unreachable or self.timed_out or self.pending or self.errors
        return not failed and not any(self.shipped.values())


@dataclass(frozen=True)
class _StreamInfo:
    last: tuple[int, int]
    added: int  # entries ever added
    length: int  # entries still there (the others were trimmed from the head)


def _info(reply: Any) -> _StreamInfo | None:
    if isinstance(reply, ResponseError):
        return None  # no stream: nothing was ever logged in that shard (or it is gone)
    if isinstance(reply, Exception):
        raise reply
    return _StreamInfo(
        _id(reply.get("last-generated-id")),
        int(reply.get("entries-added") or 0),
        int(reply.get("length") or 0),
    )


@dataclass(frozen=True)
class _Cursor:
    """Where a pair stands in one shard's stream: the last entry replayed, and its ordinal
    (how many entries the stream had ever received up to and including it)."""

    position: tuple[int, int]
    ordinal: int

    @classmethod
    def parse(cls, raw: bytes) -> _Cursor:
        position, _, ordinal = raw.decode().partition(" ")
        return cls(_id(position), int(ordinal or 0))

    def __str__(self) -> str:
        return f"{_id_text(self.position)} {self.ordinal}"

    def gap(self, info: _StreamInfo | None) -> bool:
        """Whether entries after this cursor may be missing from the source's stream."""
        if info is None:
            return self != _Cursor((0, 0), 0)  # the stream is gone: the source lost its data
        trimmed = info.added - info.length  # trimming only ever cuts the oldest entries
        rolled_back = info.last < self.position or info.added < self.ordinal
        return rolled_back or trimmed > self.ordinal


def _id(raw: bytes | str | None) -> tuple[int, int]:
    if raw is None:
        return (0, 0)
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return (int(ms), int(seq or 0))


def _id_text(value: tuple[int, int]) -> str:
    return f"{value[0]}-{value[1]}"


class RegionSyncer:
    """Ships changes between every pair of the given regions (name -> async client).

    ``prefix`` and ``shards`` must match the stores writing in the regions. ``batch`` bounds
    the entries read per shard and round, ``chunk`` the fields or dots per script of a full
    copy, ``pair_timeout`` (seconds) the time one pair may take per round.
    """

    def __init__(
        self,
        regions: Mapping[str, aioredis.Redis | aioredis.RedisCluster],
        *,
        prefix: str = DEFAULT_PREFIX,
        shards: int = DEFAULT_SHARDS,
        batch: int = 500,
        chunk: int = 200,
        pair_timeout: float = 5.0,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        observer: Observer | None = None,
    ) -> None:
        if len(regions) < 2:
            raise ConfigurationError("sync needs at least two regions")
        if batch < 1:
            raise ConfigurationError("batch must be positive")
        if not pair_timeout > 0:
            raise ConfigurationError("pair_timeout must be positive (seconds)")
        self.stores = {
            name: CrdtStore(
                client,
                region=name,
                prefix=prefix,
                shards=shards,
                chunk=chunk,
                max_drift_ms=max_drift_ms,
                observer=observer,
            )
            for name, client in regions.items()
        }
        self.prefix = prefix
        self.shards = shards
        self.batch = batch
        self.chunk = chunk
        self.pair_timeout = pair_timeout
        self.max_drift_ms = max_drift_ms
        self.observer = observer
        self._types: dict[int, type[Crdt]] = registered_types()

    # Keys the syncer keeps in the destination region, one set per source region.

    def _cursor_key(self, src: str) -> str:
        return f"{self.prefix}sync:{src}:cursor"

    def _full_key(self, src: str) -> str:
        return f"{self.prefix}sync:{src}:full"

    def _skipped_key(self, src: str) -> str:
        return f"{self.prefix}sync:{src}:skipped"

    def pairs(self) -> list[Pair]:
        return [(s, d) for s in self.stores for d in self.stores if s != d]

    async def sync_once(self) -> SyncReport:
        """One round: every pair concurrently, each under its own deadline."""
        report = SyncReport()
        await asyncio.gather(*(self._pair(src, dst, report) for src, dst in self.pairs()))
        return report

    async def run(self, *, interval: float = 1.0, stop: asyncio.Event | None = None) -> None:
        """Sync until ``stop`` is set (or the task is cancelled), every pair in its own loop.

        A pair waits ``interval`` seconds between its rounds, none when it has work left.
        Outcomes go to the observer (``crdt.sync`` per pair and round).
        """
        stop = stop or asyncio.Event()

        async def loop(src: str, dst: str) -> None:
            while not stop.is_set():
                report = SyncReport()
                await self._pair(src, dst, report)
                if (src, dst) in report.pending:
                    await asyncio.sleep(0)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

        await asyncio.gather(*(loop(src, dst) for src, dst in self.pairs()))

    async def run_until_quiet(self, *, max_rounds: int = 50, seconds: float = 30.0) -> bool:
        """Sync rounds until one moves nothing with every pair done; False if that never came."""
        deadline = time.monotonic() + seconds
        for _ in range(max_rounds):
            if (await self.sync_once()).quiet:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0)
        return False

    async def _pair(self, src: str, dst: str, report: SyncReport) -> None:
        pair = (src, dst)
        report.shipped[pair] = 0
        watch = Stopwatch()
        outcome = "ok"
        try:
            async with asyncio.timeout(self.pair_timeout):
                await self._ship(src, dst, report)
        except TimeoutError:
            outcome = "timeout"
            report.timed_out.append(pair)
        except (RedisError, OSError, StoreUnavailableError):
            outcome = "unreachable"
            report.unreachable.append(pair)
        except Exception as exc:  # a bug must not stop the other pairs: report it
            outcome = "error"
            report.errors[pair] = f"{type(exc).__name__}: {exc}"
            log.exception("crdt sync %s -> %s failed", src, dst)
        report.durations[pair] = watch.elapsed()
        attrs = {
            "src": src,
            "dst": dst,
            "shipped": report.shipped[pair],
            "skipped": sum(1 for s in report.skipped if (s.src, s.dst) == pair),
            "full_pass": pair in report.full_passes,
            "pending": pair in report.pending,
        }
        emit(self.observer, watch.event("crdt.sync", outcome, attrs=attrs))

    async def _stream_infos(self, source: CrdtStore, shards: list[int]) -> list[_StreamInfo | None]:
        pipe = source.client.pipeline(transaction=False)
        for shard in shards:
            pipe.xinfo_stream(source.layout.log_key(shard))
        return [_info(reply) for reply in await pipe.execute(raise_on_error=False)]

    async def _ship(self, src: str, dst: str, report: SyncReport) -> None:
        source, target = self.stores[src], self.stores[dst]
        cursors: dict[Any, Any] = await target.client.hgetall(self._cursor_key(src))
        fulls: dict[Any, Any] = await target.client.hgetall(self._full_key(src))
        infos = await self._stream_infos(source, list(range(self.shards)))
        active: list[tuple[int, _Cursor]] = []
        for shard in range(self.shards):
            key = str(shard).encode()
            info = infos[shard]
            progress = fulls.get(key)
            cursor = None if cursors.get(key) is None else _Cursor.parse(cursors[key])
            if progress is None and (cursor is None or cursor.gap(info)):
                mark = _Cursor(info.last, info.added) if info else _Cursor((0, 0), 0)
                progress = f"{mark}|0".encode()
                await target.client.hset(self._full_key(src), key, progress)
            if progress is not None:
                if (src, dst) not in report.full_passes:
                    report.full_passes.append((src, dst))
                await self._full_pass(src, dst, shard, progress.decode(), report)
            elif cursor is not None and info is not None and info.last > cursor.position:
                active.append((shard, cursor))
        for shard, cursor in active:
            await self._replay(src, dst, shard, cursor, report)

    async def _replay(
        self, src: str, dst: str, shard: int, cursor: _Cursor, report: SyncReport
    ) -> None:
        source, target = self.stores[src], self.stores[dst]
        log = source.layout.log_key(shard)
        pipe = source.client.pipeline(transaction=False)
        pipe.xrange(log, min=f"({_id_text(cursor.position)}", max="+", count=self.batch)
        pipe.xinfo_stream(log)
        entries, raw_info = await pipe.execute(raise_on_error=False)
        if isinstance(entries, Exception):
            raise entries
        info = _info(raw_info)
        if cursor.gap(info):
            # Trimmed while we read: the entries may have a hole. Next round does a full pass.
            report.pending.append((src, dst))
            return
        whole: dict[str, None] = {}  # objects to copy whole: once per batch, however often named
        for _, fields in entries:
            await self._apply(src, dst, fields, report, whole)
        for name in whole:
            try:
                await self._copy(src, dst, name)
            except CrdtError as exc:
                await self._skip(src, dst, name, exc, report)
        if entries:
            moved = _Cursor(_id(entries[-1][0]), cursor.ordinal + len(entries))
            await target.client.hset(self._cursor_key(src), str(shard), str(moved))
            report.shipped[(src, dst)] += len(entries)
        if len(entries) == self.batch and (src, dst) not in report.pending:
            report.pending.append((src, dst))

    async def _apply(
        self,
        src: str,
        dst: str,
        fields: dict[bytes, bytes],
        report: SyncReport,
        whole: dict[str, None],
    ) -> None:
        target = self.stores[dst]
        try:
            name = entry_name(fields)
        except CrdtError:
            return  # not even a name: nothing to skip or retry
        try:
            call = entry_call(fields, self._types, target.max_drift_ms)
            if call is None:
                whole[name] = None
            else:
                await target.execute(call)
        except CrdtError as exc:
            await self._skip(src, dst, name, exc, report)

    async def _full_pass(
        self, src: str, dst: str, shard: int, progress: str, report: SyncReport
    ) -> None:
        source, target = self.stores[src], self.stores[dst]
        mark, _, scan_cursor = progress.partition("|")
        index = source.layout.index_key(shard)
        cursor: Any = int(scan_cursor or 0)
        while True:
            cursor, names = await source.client.hscan(index, cursor, count=_NAMES_PER_STEP)
            for raw in names:
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                try:
                    await self._copy(src, dst, name)
                except CrdtError as exc:
                    await self._skip(src, dst, name, exc, report)
            report.shipped[(src, dst)] += len(names)
            if int(cursor) == 0:
                break
            await target.client.hset(self._full_key(src), str(shard), f"{mark}|{cursor}")
        await target.client.hset(self._cursor_key(src), str(shard), mark)
        await target.client.hdel(self._full_key(src), str(shard))

    async def _copy(self, src: str, dst: str, name: str) -> bool:
        source, target = self.stores[src], self.stores[dst]
        for _ in range(_COPY_ATTEMPTS):
            plan = copy_plan(
                name, chunk=self.chunk, max_drift_ms=target.max_drift_ms, types=self._types
            )
            try:
                return await _drive(plan, source, target)
            except ObjectMovedError:
                continue
        raise ObjectMovedError(
            f"{name!r} kept changing epoch at {src!r} during {_COPY_ATTEMPTS} copies"
        )

    async def _skip(
        self, src: str, dst: str, name: str, exc: CrdtError, report: SyncReport
    ) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        await self.stores[dst].client.hset(self._skipped_key(src), name, reason)
        report.skipped.append(Skipped(src, dst, name, reason))
        attrs = {"src": src, "dst": dst, "object": name, "error": type(exc).__name__}
        emit(self.observer, Event("crdt.skip", "skipped", attrs=attrs))

    async def skipped(self) -> list[Skipped]:
        """Every object some pair had to skip and has not merged since (reachable regions)."""
        found = []
        for src, dst in self.pairs():
            try:
                items: dict[Any, Any] = await self.stores[dst].client.hgetall(
                    self._skipped_key(src)
                )
            except (RedisError, OSError):
                continue
            for name, reason in sorted(items.items()):
                found.append(Skipped(src, dst, name.decode(), reason.decode()))
        return found

    async def retry(self, src: str, dst: str, name: str) -> bool:
        """Copy one skipped object again; on success it is no longer listed. Raises if it
        still cannot be merged (the error says why)."""
        await self._copy(src, dst, name)
        await self.stores[dst].client.hdel(self._skipped_key(src), name)
        return True

    async def retry_skipped(self) -> list[Skipped]:
        """Retry every skipped object; returns those that still cannot be merged (with the
        current reason)."""
        remaining = []
        for item in await self.skipped():
            try:
                await self.retry(item.src, item.dst, item.name)
            except CrdtError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                await self.stores[item.dst].client.hset(
                    self._skipped_key(item.src), item.name, reason
                )
                remaining.append(Skipped(item.src, item.dst, item.name, reason))
        return remaining


async def _drive(plan: Plan, source: CrdtStore, target: CrdtStore) -> bool:
    reply = None
    try:
        while True:
            side, call = plan.send(reply)
            reply = await (target if side == DST else source).execute(call)
    except StopIteration as stop:
        return bool(stop.value)
