"""FencedLock and SyncFencedLock against a real redis-server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
import redis.asyncio as aioredis

from idemkit.errors import (
    ConfigurationError,
    IdemkitError,
    InvalidLockNameError,
    LeaseLostError,
    LockNotHeldError,
    LockTimeoutError,
    LockUsageError,
)
from idemkit.lock import FencedLock, SyncFencedLock

# Every test here runs on single Redis, Cluster and Sentinel (see tests/conftest.py).
pytestmark = pytest.mark.topologies


async def test_acquire_returns_increasing_tokens(aredis: aioredis.Redis) -> None:
    lock = FencedLock(aredis, "orders", lease_ms=5_000)
    tokens = []
    for _ in range(3):
        async with lock as token:
            assert lock.held and lock.token == token
            tokens.append(token)
        assert not lock.held
    assert tokens == sorted(set(tokens))


async def test_second_holder_times_out_then_gets_a_larger_token(aredis: aioredis.Redis) -> None:
    first, second = FencedLock(aredis, "x"), FencedLock(aredis, "x")
    t1 = await first.acquire()
    with pytest.raises(LockTimeoutError, match="not acquired at once"):
        await second.acquire(blocking=False)
    with pytest.raises(LockTimeoutError, match=r"within 0\.05 s"):
        await second.acquire(timeout=0.05)
    await first.release()
    assert await second.acquire(blocking=False) > t1
    await second.release()


async def test_release_wakes_a_waiter_without_waiting_for_the_poll(
    aredis: aioredis.Redis,
) -> None:
    holder = FencedLock(aredis, "handoff", lease_ms=10_000)
    waiter = FencedLock(aredis, "handoff", poll_interval=5.0)
    await holder.acquire()
    task = asyncio.create_task(waiter.acquire(timeout=5))
    await asyncio.sleep(0.1)  # the waiter is blocked in BLPOP by now
    released = time.monotonic()
    await holder.release()
    await task
    assert time.monotonic() - released < 0.5  # far below the 5 s poll and the 10 s lease
    await waiter.release()


async def test_expired_lease_is_taken_over_and_the_zombie_learns_it(
    aredis: aioredis.Redis,
) -> None:
    zombie, fresh = FencedLock(aredis, "z", lease_ms=100), FencedLock(aredis, "z")
    old = await zombie.acquire()
    started = time.monotonic()
    new = await fresh.acquire(timeout=2)  # woken by the lease running out, not by a release
    assert new > old and time.monotonic() - started < 1.0
    assert not zombie.held
    with pytest.raises(LeaseLostError):
        _ = zombie.token
    with pytest.raises(LeaseLostError):
        await zombie.extend()
    with pytest.raises(LeaseLostError, match="lost before release"):
        await zombie.release()
    await fresh.release()


async def test_extend_keeps_the_lock(aredis: aioredis.Redis) -> None:
    lock, other = FencedLock(aredis, "e", lease_ms=150), FencedLock(aredis, "e")
    await lock.acquire()
    for _ in range(3):
        await asyncio.sleep(0.08)
        await lock.extend()
    with pytest.raises(LockTimeoutError):
        await other.acquire(blocking=False)
    await lock.release()


async def test_watchdog_renews_and_reports_loss(aredis: aioredis.Redis) -> None:
    seen: list[LeaseLostError] = []
    lock = FencedLock(aredis, "w", lease_ms=400, watchdog=True, on_lost=seen.append)
    token = await lock.acquire()
    await asyncio.sleep(1.0)  # well past the lease: only renewals keep it
    assert lock.held and lock.token == token
    # Someone force-expires the lease and takes the lock: the next renewal finds a newer token.
    await aredis.hset(lock.keys[0], "e", "0")
    intruder = FencedLock(aredis, "w")
    await intruder.acquire(blocking=False)
    await asyncio.wait_for(lock.lost_event.wait(), 1.0)
    assert lock.lost and len(seen) == 1 and seen[0].token == token
    with pytest.raises(LeaseLostError):
        _ = lock.token
    with pytest.raises(LeaseLostError):
        await lock.release()
    await intruder.release()


async def test_retried_acquire_after_a_client_timeout_is_idempotent(
    aredis: aioredis.Redis,
) -> None:
    lock = FencedLock(aredis, "retry")
    owner = lock._begin_acquire()
    # The first attempt reached Redis but its reply was lost (client timeout).
    phantom = await lock._store.claim_owned(lock.keys, owner, lock.lease_ms, lock.retention_ms)
    # The retry reuses the owner id kept on the handle and gets the same grant, not BUSY.
    assert await lock.acquire(blocking=False) == phantom.token
    await lock.release()


async def test_release_is_cancellation_safe(aredis: aioredis.Redis) -> None:
    lock, other = FencedLock(aredis, "c"), FencedLock(aredis, "c")
    await lock.acquire()
    task = asyncio.create_task(lock.release())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert not lock.held
    await other.acquire(blocking=False)  # the release went through
    await other.release()


@pytest.mark.parametrize(
    ("name", "match"),
    [("", "non-empty"), ("x" * 513, "limit is 512"), ("a{b}", "braces"), (None, "non-empty")],
)
def test_bad_names_are_rejected(sync_redis: redis.Redis, name: object, match: str) -> None:
    with pytest.raises(InvalidLockNameError, match=match):
        SyncFencedLock(sync_redis, name)  # type: ignore[arg-type]


@pytest.mark.parametrize("lease", [0, -5, 1.5, True])
def test_bad_leases_are_rejected(sync_redis: redis.Redis, lease: object) -> None:
    with pytest.raises(ConfigurationError, match="lease_ms must be a positive int"):
        SyncFencedLock(sync_redis, "l", lease_ms=lease)  # type: ignore[arg-type]


def test_bad_acquire_arguments_are_rejected(sync_redis: redis.Redis) -> None:
    lock = SyncFencedLock(sync_redis, "args")
    with pytest.raises(ConfigurationError, match="non-blocking"):
        lock.acquire(timeout=1, blocking=False)
    with pytest.raises(ConfigurationError, match="seconds >= 0"):
        lock.acquire(timeout=-1)
    with pytest.raises(ConfigurationError, match="retention_ms"):
        SyncFencedLock(sync_redis, "r", lease_ms=10_000, retention_ms=5_000)


async def test_release_or_extend_without_holding_is_a_specific_error(
    aredis: aioredis.Redis,
) -> None:
    lock = FencedLock(aredis, "n")
    with pytest.raises(LockNotHeldError, match="nothing to release"):
        await lock.release()
    with pytest.raises(LockNotHeldError, match="nothing to extend"):
        await lock.extend()
    await lock.acquire()
    with pytest.raises(LockUsageError, match="not reentrant"):
        await lock.acquire()
    await lock.release()
    with pytest.raises(LockNotHeldError):
        await lock.release()
    assert issubclass(LockNotHeldError, IdemkitError)


def test_a_handle_belongs_to_one_event_loop(redis_url: str) -> None:
    lock: FencedLock | None = None

    async def first() -> None:
        nonlocal lock
        client = aioredis.Redis.from_url(redis_url)
        lock = FencedLock(client, "loop")
        await lock.acquire()
        await client.aclose()

    async def second() -> None:
        assert lock is not None
        await lock.release()

    asyncio.run(first())
    with pytest.raises(LockUsageError, match="another event loop"):
        asyncio.run(second())


def test_sync_lock_has_the_same_semantics(sync_redis: redis.Redis) -> None:
    a = SyncFencedLock(sync_redis, "s", lease_ms=5_000)
    b = SyncFencedLock(sync_redis, "s", poll_interval=5.0)
    with a as t1:
        with pytest.raises(LockTimeoutError):
            b.acquire(timeout=0.05)
        got: list[int] = []
        thread = threading.Thread(target=lambda: got.append(b.acquire(timeout=5)))
        thread.start()
        time.sleep(0.1)
        released = time.monotonic()
    thread.join(5)
    assert got and got[0] > t1 and time.monotonic() - released < 0.5
    b.extend()
    b.release()
    with pytest.raises(LockNotHeldError):
        b.release()


def test_sync_watchdog_renews_and_reports_loss(sync_redis: redis.Redis) -> None:
    seen: list[LeaseLostError] = []
    lock = SyncFencedLock(sync_redis, "sw", lease_ms=150, watchdog=True, on_lost=seen.append)
    lock.acquire()
    time.sleep(0.4)
    assert lock.held
    sync_redis.hset(lock.keys[0], "e", "0")
    intruder = SyncFencedLock(sync_redis, "sw")
    intruder.acquire(blocking=False)
    assert lock.lost_event.wait(1.0) and seen
    with pytest.raises(LeaseLostError):
        lock.release()
    intruder.release()


def test_lease_that_runs_out_locally_is_reported_without_a_round_trip(
    sync_redis: redis.Redis,
) -> None:
    lock = SyncFencedLock(sync_redis, "local", lease_ms=50)
    lock.acquire()
    time.sleep(0.07)
    with pytest.raises(LeaseLostError, match="ran out without renewal"):
        lock.ensure_held()
    # Nobody else claimed it, so Redis still counts this holder as the newest: release works.
    lock.release()


async def test_check_server_warns_about_eviction(aredis: aioredis.Redis) -> None:
    lock = FencedLock(aredis, "ev")
    assert await lock.check_server() is None  # the test server runs with noeviction
    await aredis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        warning = await lock.check_server()
        assert warning is not None and "noeviction" in warning
    finally:
        await aredis.config_set("maxmemory-policy", "noeviction")
