"""Three real regions: one is down during concurrent updates, comes back and converges."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from crdt import GCounter, LWWRegister, ORMap, ORSet, PNCounter
from crdt.redis_store import CrdtStore
from crdt.sync import RegionSyncer
from idemkit.testing import RedisServer

NAMES = ("eu", "us", "ap")
OBJECTS = {"visits": PNCounter, "cart": ORSet, "title": LWWRegister, "prefs": ORMap}


def _client(server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=0.5)


async def _snapshot(store: CrdtStore) -> dict[str, object]:
    return {name: await store.load(name, kind) for name, kind in OBJECTS.items()}


async def _writes(store: CrdtStore, region: str, start: int, rounds: int) -> None:
    for i in range(start, start + rounds):
        await store.increment("visits", 3)
        await store.increment("visits", -1)
        await store.add("cart", f"{region}-{i}")
        if i % 4 == 0:
            await store.remove("cart", f"{region}-{i}")
        await store.assign("title", f"{region}-{i}")
        await store.update(
            "prefs",
            ORMap,
            lambda m: m.apply(region, region, GCounter, lambda c: c.increment(region, 1)),
        )
        await asyncio.sleep(0)


async def test_region_down_during_updates_catches_up(three_regions: list[RedisServer]) -> None:
    clients = {name: _client(server) for name, server in zip(NAMES, three_regions, strict=True)}
    stores = {name: CrdtStore(client, region=name) for name, client in clients.items()}
    syncer = RegionSyncer(clients)
    try:
        await stores["ap"].add("cart", "shared")
        await _writes(stores["ap"], "ap", 0, 5)
        assert await syncer.run_until_quiet(seconds=20)

        three_regions[2].stop()  # "ap" goes down
        # "eu" removes the shared item while "us" concurrently re-adds it: add wins.
        await stores["eu"].remove("cart", "shared")
        await stores["us"].add("cart", "shared")
        for step in range(4):  # concurrent writers in eu and us, with sync rounds in between
            await asyncio.gather(
                _writes(stores["eu"], "eu", step * 10, 10),
                _writes(stores["us"], "us", step * 10, 10),
            )
            report = await syncer.sync_once()
            assert ("eu", "ap") in report.unreachable

        three_regions[2].start()  # back, with its AOF data and its cursors
        await clients["ap"].ping()
        assert await syncer.run_until_quiet(seconds=30)

        snapshots = [await _snapshot(stores[name]) for name in NAMES]
        assert snapshots[0] == snapshots[1] == snapshots[2]
        final = snapshots[0]
        assert final["visits"].value == (5 + 40 + 40) * 2  # type: ignore[attr-defined]
        cart = final["cart"].value  # type: ignore[attr-defined]
        expected = {f"{r}-{i}" for r, n in (("ap", 5), ("eu", 40), ("us", 40)) for i in range(n)}
        expected = {e for e in expected if int(e.split("-")[1]) % 4 != 0} | {"shared"}
        assert cart == expected
        assert final["prefs"].value == {"ap": 5, "eu": 40, "us": 40}  # type: ignore[attr-defined]
    finally:
        for client in clients.values():
            await client.aclose()


async def test_trimmed_stream_falls_back_to_full_state(three_regions: list[RedisServer]) -> None:
    clients = {name: _client(server) for name, server in zip(NAMES, three_regions, strict=True)}
    eu = CrdtStore(clients["eu"], region="eu", log_maxlen=1, shards=1)
    syncer = RegionSyncer(clients, shards=1)
    try:
        await eu.increment("visits", 1)
        assert await syncer.run_until_quiet(seconds=10)
        for i in range(50):  # many objects, then a trim: their names leave the stream
            await eu.add(f"cart{i}", i)
        await clients["eu"].xtrim(eu.layout.log_key(0), maxlen=1, approximate=False)
        report = await syncer.sync_once()
        assert ("eu", "us") in report.full_passes
        assert await syncer.run_until_quiet(seconds=10)
        for name in NAMES:
            store = CrdtStore(clients[name], region=name, shards=1)
            for i in range(50):
                assert (await store.load(f"cart{i}", ORSet)).value == frozenset([i])
    finally:
        for client in clients.values():
            await client.aclose()
