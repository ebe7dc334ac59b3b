"""Anti-entropy between independent Redis deployments (regions).

Every script that changes an object appends its name to the region's change stream. For
each ordered pair of regions (src, dst) the syncer reads src's stream from a cursor kept
*in dst*, loads the named objects' full states from src and merges them into dst with the
server-side join, then advances the cursor. Merges are idempotent, so a crash between merge
and cursor update only repeats work. A merge that changes dst is logged in dst's stream, so
updates also travel through a third region; one that changes nothing is not, so echoes stop.

Fallback: when src's stream no longer holds everything after the cursor (trimmed past it, or
src lost its data and restarted with a fresh stream), the pair does a full-state pass over
every object in src. A region that is down is skipped and caught up when it returns: its
cursors were not advanced while it was away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from crdt.base import registered_types
from crdt.errors import CrdtError
from crdt.redis_store import DEFAULT_PREFIX, CrdtStore
from idemkit.errors import ConfigurationError, StoreUnavailableError

__all__ = ["RegionSyncer", "SyncReport"]


@dataclass
class SyncReport:
    """What one round did: objects merged per (src, dst), full passes and unreachable pairs."""

    shipped: dict[tuple[str, str], int] = field(default_factory=dict)
    full_passes: list[tuple[str, str]] = field(default_factory=list)
    unreachable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def quiet(self) -> bool:
        """Nothing moved and every pair answered: the regions agree (as of this round)."""
        return not self.unreachable and not any(self.shipped.values())


def _id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return (int(ms), int(seq or 0))


class RegionSyncer:
    """Ships changes between every pair of the given regions (name -> async client)."""

    def __init__(
        self,
        regions: Mapping[str, aioredis.Redis],
        *,
        prefix: str = DEFAULT_PREFIX,
        batch: int = 500,
    ) -> None:
        if len(regions) < 2:
            raise ConfigurationError("sync needs at least two regions")
        if batch < 1:
            raise ConfigurationError("batch must be positive")
        self.stores = {
            name: CrdtStore(c, region=name, prefix=prefix) for name, c in regions.items()
        }
        self.prefix = prefix
        self.batch = batch
        self._types = registered_types()

    def _cursor_key(self, src: str) -> str:
        return f"{self.prefix}cursor:{src}"

    async def sync_once(self) -> SyncReport:
        report = SyncReport()
        for src in self.stores:
            for dst in self.stores:
                if src == dst:
                    continue
                try:
                    report.shipped[(src, dst)] = await self._ship(src, dst, report)
                except (RedisError, OSError, StoreUnavailableError):
                    report.unreachable.append((src, dst))
        return report

    async def run_until_quiet(self, *, max_rounds: int = 50, seconds: float = 30.0) -> bool:
        """Sync rounds until one moves nothing with every region up; False if that never came."""
        deadline = time.monotonic() + seconds
        for _ in range(max_rounds):
            if (await self.sync_once()).quiet:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0)
        return False

    async def _ship(self, src: str, dst: str, report: SyncReport) -> int:
        source, target = self.stores[src], self.stores[dst]
        raw_cursor: Any = await target.client.get(self._cursor_key(src))
        cursor = raw_cursor.decode() if raw_cursor else "0-0"
        if await self._has_gap(source, cursor):
            report.full_passes.append((src, dst))
            return await self.full_pass(src, dst)
        entries: Any = await source.client.xrange(
            source.log_key, min=f"({cursor}", max="+", count=self.batch
        )
        names: dict[str, int] = {}
        for _, fields in entries:
            names[fields[b"n"].decode()] = int(fields[b"t"])
        for name, tag in names.items():
            await self._copy(source, target, name, tag)
        if entries:
            await target.client.set(self._cursor_key(src), entries[-1][0])
        return len(names)

    async def _has_gap(self, source: CrdtStore, cursor: str) -> bool:
        if cursor == "0-0":
            return False
        try:
            info: dict[str, Any] = await source.client.xinfo_stream(source.log_key)
        except RedisError:
            return True  # the stream is gone: src was rebuilt
        last = info.get("last-generated-id") or b"0-0"
        first = info.get("first-entry")
        # The entry at our cursor was trimmed (so entries after it may be gone too), or the
        # stream is younger than our cursor (src lost its data): only a full pass is safe.
        trimmed = first is not None and _id(first[0]) > _id(cursor)
        return trimmed or _id(last) < _id(cursor)

    async def full_pass(self, src: str, dst: str) -> int:
        """Merge every object of ``src`` into ``dst`` and move the cursor to src's stream end."""
        source, target = self.stores[src], self.stores[dst]
        # Read the stream end first: anything logged after it is shipped next round.
        last: Any = b"0-0"
        tail: Any = await source.client.xrevrange(source.log_key, count=1)
        if tail:
            last = tail[0][0]
        count = 0
        async for key in source.client.scan_iter(match=f"{self.prefix}{{*}}", count=500):
            text = key.decode()
            name = text[len(self.prefix) + 1 : -1]
            tag = await source.client.hget(key, "#t")
            if tag is not None:
                await self._copy(source, target, name, int(tag))
                count += 1
        await target.client.set(self._cursor_key(src), last)
        return count

    async def _copy(self, source: CrdtStore, target: CrdtStore, name: str, tag: int) -> None:
        kind = self._types.get(tag)
        if kind is None:
            raise CrdtError(f"region holds {name!r} with unknown type tag {tag}: upgrade idemkit")
        await target.merge(name, await source.load(name, kind))
