"""Cancelling an async acquire never leaves a grant nobody holds, nor swallows a wake-up.

A :class:`LossyProxy` delays Redis's replies, so a cancellation lands while a claim (or a
``BLPOP``) has already been executed by Redis but its reply is still on the way: the case a
plain ``await`` cannot see. The second handle waits with a 30 s poll interval against a 30 s
lease, so only a release (and its wake-up) can give it the lock in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry

from idemkit.lock import FencedLock
from idemkit.semaphore import FencedSemaphore
from idemkit.testing import LossyProxy, RedisServer

DELAY = 0.02  # the proxy's reply delay: one slow round trip
NO_POLL = 30.0


@pytest.fixture
async def slow_redis(redis_server: RedisServer, redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client whose every reply arrives DELAY seconds late; the proxy is on ``.proxy``."""
    with LossyProxy(redis_server.port, reply_delay=DELAY, seed=1) as proxy:
        # No connection handshake (RESP2, no CLIENT SETINFO): after a cancellation drops a
        # connection, the next command goes out at once instead of after delayed round trips.
        client = aioredis.Redis(
            port=proxy.port, retry=Retry(NoBackoff(), 0), protocol=2, driver_info=None
        )
        client.proxy = proxy  # type: ignore[attr-defined]
        yield client
        await client.aclose()


def count_claims(lock: FencedLock) -> list[int]:
    """Count the claims (round trips) ``lock`` sends."""
    calls = [0]
    original: Callable[..., Awaitable[Any]] = lock._store.claim_owned

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(*args, **kwargs)

    lock._store.claim_owned = counted  # type: ignore[method-assign]
    return calls


async def settle(*locks: FencedLock) -> None:
    """Wait until the locks' cleanups (shielded tasks) are done."""
    for _ in range(200):
        if not any(lock._background for lock in locks):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("cleanup tasks did not finish")


async def test_acquires_cancelled_mid_claim_leave_no_orphan_grant(
    slow_redis: aioredis.Redis, aredis: aioredis.Redis
) -> None:
    rng = random.Random(7)
    second = FencedLock(aredis, "mid-claim", poll_interval=NO_POLL)
    claims = count_claims(second)
    waits: list[float] = []
    cancelled = 0
    first = FencedLock(slow_redis, "mid-claim", lease_ms=30_000)
    for _ in range(200):
        task = asyncio.create_task(first.acquire())
        await asyncio.sleep(rng.uniform(0, DELAY * 0.8))  # the claim is out, its reply is not
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
        else:
            await first.release()  # the reply beat the cancellation: not this test's case
            continue
        at = time.monotonic()
        before = claims[0]
        await second.acquire(timeout=2.0)  # an orphan grant would hold it for 30 s
        waits.append(time.monotonic() - at)
        # One claim finds the cancelled grant still there, the wake-up of its release lets
        # the next one through (a third only when a stale wake-up of a release came first).
        assert claims[0] - before <= 3
        await second.release()
    await settle(first)
    assert cancelled >= 180
    # Within one (slow) round trip of the cancellation: the reply of the cancelled claim,
    # then the release it triggers; nowhere near the poll interval or the lease.
    assert statistics.median(waits) < DELAY + 0.05, statistics.median(waits)
    assert max(waits) < 1.0
    assert await aredis.hget(first.keys[0], "s") != b"p"


async def test_semaphore_acquires_cancelled_mid_claim_give_their_slot_back(
    slow_redis: aioredis.Redis, aredis: aioredis.Redis
) -> None:
    first = FencedSemaphore(slow_redis, "mid-sem", 2, lease_ms=30_000)
    others = [FencedSemaphore(aredis, "mid-sem", 2, poll_interval=NO_POLL) for _ in range(2)]
    for i in range(40):
        task = asyncio.create_task(first.acquire())
        await asyncio.sleep(DELAY * (i % 4) / 5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if first.held:
            await first.release()
        # Both slots are free again at once (the cancelled one after its release).
        await asyncio.gather(*(o.acquire(timeout=2.0) for o in others))
        assert sorted(o.slot for o in others) == [0, 1]
        for o in others:
            await o.release()
    await settle(first)


async def test_a_cancelled_waiter_hands_its_wake_up_on(
    slow_redis: aioredis.Redis, aredis: aioredis.Redis
) -> None:
    slow_delay = 0.1
    slow_redis.proxy.reply_delay = slow_delay  # type: ignore[attr-defined]
    holder = FencedLock(aredis, "wake", lease_ms=30_000)
    for _ in range(5):
        await holder.acquire()
        first = FencedLock(slow_redis, "wake", poll_interval=NO_POLL)
        second = FencedLock(aredis, "wake", poll_interval=NO_POLL)
        t1 = asyncio.create_task(first.acquire(timeout=10))
        await asyncio.sleep(slow_delay * 2.5)  # first: busy claim answered, now in BLPOP
        t2 = asyncio.create_task(second.acquire(timeout=3))
        await asyncio.sleep(0.05)  # second blocks behind first: Redis serves BLPOP in order
        await holder.release()  # the wake-up goes to first, whose reply is on its way
        await asyncio.sleep(slow_delay / 2)
        t1.cancel()
        at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await t1
        await t2  # without the hand-on it would sleep for the poll interval and time out
        assert time.monotonic() - at < slow_delay + 0.5
        await second.release()
        await settle(first)


async def test_cancelled_after_a_failed_claim_releases_the_grant_it_may_have(
    slow_redis: aioredis.Redis, aredis: aioredis.Redis
) -> None:
    proxy: LossyProxy = slow_redis.proxy  # type: ignore[attr-defined]
    proxy.reply_delay = 0.0
    proxy.drop_rate = 1.0  # every claim runs in Redis, every reply is lost
    first = FencedLock(slow_redis, "lost-reply", lease_ms=30_000)
    task = asyncio.create_task(first.acquire(timeout=10))
    await asyncio.sleep(0.3)  # a few claims sent, each granted (idempotently) and unanswered
    assert await aredis.hget(first.keys[0], "s") == b"p"
    proxy.drop_rate = 0.0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    second = FencedLock(aredis, "lost-reply", poll_interval=NO_POLL)
    await second.acquire(timeout=2.0)  # the cleanup found the unanswered grant and released it
    await second.release()
    await settle(first)
