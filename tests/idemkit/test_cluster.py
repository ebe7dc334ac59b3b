"""The same middleware and lease store on a real 3-node Redis Cluster."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from idemkit.lease import CLAIMED, COMPLETED, LeaseStore
from idemkit.testing import RedisCluster
from tests.idemkit.shop import Shop, client


async def test_middleware_on_redis_cluster(redis_cluster: RedisCluster) -> None:
    cluster = AsyncRedisCluster.from_url(redis_cluster.url)
    shop = Shop()
    async with client(shop.app(store=LeaseStore(cluster))) as c:
        for i in range(20):  # keys spread over all three masters' slots
            headers = {"Idempotency-Key": f"cluster-{i}"}
            first = await c.post("/payments", content=b"x", headers=headers)
            second = await c.post("/payments", content=b"x", headers=headers)
            assert first.status_code == 201
            assert second.headers["idempotent-replayed"] == "true"
    assert shop.calls["pay"] == 20
    store = LeaseStore(cluster)
    key = store.record_key("direct")
    claim = await store.claim(key, b"fp", 1000, 10_000)
    assert claim.outcome == CLAIMED
    assert await store.complete(key, claim.token, b"r", 10_000)
    assert (await store.claim(key, b"fp", 1000, 10_000)).outcome == COMPLETED
    await cluster.aclose()
