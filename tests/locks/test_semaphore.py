"""Fenced semaphores (N lease records under one hash tag) and locks on Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
import redis.asyncio as aioredis

from idemkit.errors import ConfigurationError, LockTimeoutError
from idemkit.fence import Fence
from idemkit.lock import FencedLock
from idemkit.semaphore import FencedSemaphore, SyncFencedSemaphore
from idemkit.testing import RedisCluster

# Every test here runs on single Redis, Cluster and Sentinel (see tests/conftest.py).
pytestmark = pytest.mark.topologies


async def test_limit_holders_each_with_their_own_slot_and_token(aredis: aioredis.Redis) -> None:
    holders = [FencedSemaphore(aredis, "pool", 3) for _ in range(4)]
    tokens = [await h.acquire(blocking=False) for h in holders[:3]]
    assert sorted(h.slot for h in holders[:3]) == [0, 1, 2]
    assert len(set(tokens)) == 3
    with pytest.raises(LockTimeoutError):
        await holders[3].acquire(blocking=False)
    waiter = asyncio.create_task(holders[3].acquire(timeout=5))
    await asyncio.sleep(0.05)
    released = time.monotonic()
    slot = holders[1].slot
    await holders[1].release()
    token = await waiter
    assert time.monotonic() - released < 0.5 and holders[3].slot == slot
    assert token > tokens[1]  # the slot's own token keeps increasing
    for h in (holders[0], holders[2], holders[3]):
        await h.release()


async def test_a_lapsed_slot_is_reclaimed(aredis: aioredis.Redis) -> None:
    a = FencedSemaphore(aredis, "lapse", 1, lease_ms=80)
    b = FencedSemaphore(aredis, "lapse", 1)
    first = await a.acquire()
    assert await b.acquire(timeout=2) > first
    await b.release()


def test_sync_semaphore_and_bad_limits(sync_redis: redis.Redis) -> None:
    third = SyncFencedSemaphore(sync_redis, "s", 2)
    with (
        SyncFencedSemaphore(sync_redis, "s", 2),
        SyncFencedSemaphore(sync_redis, "s", 2),
        pytest.raises(LockTimeoutError),
    ):
        third.acquire(timeout=0.05)
    for limit in (0, -1, 2.5, 5000):
        with pytest.raises(ConfigurationError, match="limit must be"):
            SyncFencedSemaphore(sync_redis, "s", limit)  # type: ignore[arg-type]


async def test_lock_semaphore_and_fence_on_redis_cluster(redis_cluster: RedisCluster) -> None:
    client = aioredis.RedisCluster.from_url(redis_cluster.url)
    try:
        names = [f"cl-{i}" for i in range(6)]  # spread over the nodes
        for name in names:
            holder, waiter = FencedLock(client, name), FencedLock(client, name)
            token = await holder.acquire()
            task = asyncio.create_task(waiter.acquire(timeout=5))
            await asyncio.sleep(0.02)
            await holder.release()
            assert await task > token
            await Fence(client).write(name, waiter.token, {"v": 1})
            await waiter.release()
        sem = FencedSemaphore(client, "cl-sem", 2)
        async with sem:
            assert sem.slot == 0
    finally:
        await client.aclose()
