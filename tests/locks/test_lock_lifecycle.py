"""What a lock handle does after its grant is in doubt: a renewal confirmed late still holds
(Redis renews only the newest token), a handle dropped without release() stops being renewed,
and a handle whose grant was lost can acquire again."""

from __future__ import annotations

import asyncio
import gc

import redis
import redis.asyncio as aioredis

from idemkit import FencedLock, SyncFencedLock
from idemkit.testing import LossyProxy, RedisServer


async def test_a_renewal_confirmed_late_still_holds_and_says_so_meanwhile(
    redis_server: RedisServer,
) -> None:
    with LossyProxy(redis_server.port) as proxy:
        client = aioredis.Redis(port=proxy.port)
        lock = FencedLock(client, "late-renewal", lease_ms=300, watchdog=True)
        token = await lock.acquire()
        proxy.reply_delay = 0.45  # renewals answer past the lease: unconfirmed meanwhile
        for _ in range(60):
            await asyncio.sleep(0.05)
            if not lock.held:
                break
        assert not lock.held  # honest while no renewal is confirmed
        proxy.reply_delay = 0.0
        for _ in range(60):
            await asyncio.sleep(0.05)
            if lock.held:
                break
        assert lock.held and lock.token == token and not lock.lost  # confirmed: still ours
        await lock.release()
        await client.aclose()


async def test_a_handle_dropped_without_release_stops_being_renewed(
    aredis: aioredis.Redis,
) -> None:
    lock = FencedLock(aredis, "dropped", lease_ms=300, watchdog=True)
    await lock.acquire()
    del lock
    gc.collect()
    other = FencedLock(aredis, "dropped", lease_ms=300)
    await other.acquire(timeout=2.0)  # would time out if the watchdog kept renewing
    await other.release()


def test_a_sync_handle_dropped_without_release_stops_being_renewed(
    sync_redis: redis.Redis,
) -> None:
    lock = SyncFencedLock(sync_redis, "dropped-sync", lease_ms=300, watchdog=True)
    lock.acquire()
    del lock
    gc.collect()
    other = SyncFencedLock(sync_redis, "dropped-sync", lease_ms=300)
    other.acquire(timeout=2.0)
    other.release()


async def test_a_handle_whose_grant_was_lost_can_acquire_again(aredis: aioredis.Redis) -> None:
    first = FencedLock(aredis, "again", lease_ms=100)
    old = await first.acquire()
    await asyncio.sleep(0.15)  # lapsed
    second = FencedLock(aredis, "again", lease_ms=5_000)
    await second.acquire()
    await second.release()
    new = await first.acquire(timeout=1.0)  # not LockUsageError: the old grant is gone
    assert new > old
    await first.release()


def test_a_sync_handle_whose_grant_ran_out_can_acquire_again(sync_redis: redis.Redis) -> None:
    lock = SyncFencedLock(sync_redis, "again-sync", lease_ms=100)
    old = lock.acquire()
    import time

    time.sleep(0.15)
    assert lock.acquire(timeout=1.0) > old  # the dead grant was given back first
    lock.release()
