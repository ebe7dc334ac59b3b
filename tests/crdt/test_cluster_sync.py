"""Sync with the change log on Redis Cluster: one region is a 3-master cluster."""

from __future__ import annotations

import redis.asyncio as aioredis

from crdt import GCounter, LWWRegister, ORMap, ORSet, PNCounter
from crdt.redis_store import CrdtStore
from crdt.sync import RegionSyncer
from idemkit.testing import RedisCluster, RedisServer


async def test_sync_between_a_cluster_and_a_single_redis(
    redis_cluster: RedisCluster, fresh_redis_server: RedisServer
) -> None:
    cluster = aioredis.RedisCluster.from_url(redis_cluster.url)
    single = aioredis.Redis.from_url(fresh_redis_server.url)
    prefix = "clustersync:"  # the cluster fixture is shared by the session
    eu = CrdtStore(cluster, region="eu", prefix=prefix)
    us = CrdtStore(single, region="us", prefix=prefix)
    syncer = RegionSyncer({"eu": cluster, "us": single}, prefix=prefix)
    names = [f"cart:{i}" for i in range(12)]
    try:
        await cluster.initialize()
        nodes = {cluster.get_node_from_key(eu.key(name)).name for name in names}
        assert len(nodes) == 3, "the objects are spread over every master"
        for i, name in enumerate(names):
            await eu.add(name, f"eu-{i}")
            await us.add(name, f"us-{i}")
        await eu.increment("visits", 2**60)
        await us.increment("visits", -5)
        await eu.assign("title", "from the cluster")
        await us.update(
            "prefs", ORMap, lambda m: m.apply("us", "k", GCounter, lambda c: c.increment("us", 1))
        )
        assert await syncer.run_until_quiet(seconds=30)
        await us.delete(names[0])
        await eu.remove(names[1], "eu-1")
        await eu.add(names[2], "late")
        assert await syncer.run_until_quiet(seconds=30)

        for store in (eu, us):
            assert (await store.load(names[0], ORSet)).value == frozenset()
            assert (await store.load(names[1], ORSet)).value == {"us-1"}
            assert (await store.load(names[2], ORSet)).value == {"eu-2", "us-2", "late"}
            for i, name in enumerate(names[3:], start=3):
                assert (await store.load(name, ORSet)).value == {f"eu-{i}", f"us-{i}"}
            assert (await store.load("visits", PNCounter)).value == 2**60 - 5
            assert (await store.load("title", LWWRegister)).value == "from the cluster"
            assert (await store.load("prefs", ORMap)).value == {"k": 1}
        # The cluster region logged its changes (one stream per shard, on every master).
        logs = {eu.keys(name).log for name in names}
        assert sum([await cluster.xlen(log) for log in logs]) >= len(names)
        report = await syncer.sync_once()
        assert report.quiet and not report.skipped
    finally:
        await cluster.aclose()
        await single.aclose()
