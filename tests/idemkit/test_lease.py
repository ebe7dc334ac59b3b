"""The fenced lease store against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis

from idemkit.errors import ConfigurationError, StoreUnavailableError
from idemkit.lease import BUSY, CLAIMED, COMPLETED, MISMATCH, LeaseStore, SyncLeaseStore


@pytest.fixture
def store(aredis: aioredis.Redis) -> LeaseStore:
    return LeaseStore(aredis, prefix="t:")


async def test_claim_then_busy_then_complete_then_replay(store: LeaseStore) -> None:
    key = store.record_key("a")
    first = await store.claim(key, b"fp", 5_000, 60_000)
    assert first.outcome == CLAIMED
    busy = await store.claim(key, b"fp", 5_000, 60_000)
    assert busy.outcome == BUSY and busy.token == first.token
    assert 0 < busy.retry_after_ms <= 5_000
    assert await store.complete(key, first.token, b"result", 60_000)
    done = await store.claim(key, b"fp", 5_000, 60_000)
    assert (done.outcome, done.result) == (COMPLETED, b"result")


async def test_fingerprint_mismatch_is_reported_before_state(store: LeaseStore) -> None:
    key = store.record_key("b")
    await store.claim(key, b"fp1", 5_000, 60_000)
    assert (await store.claim(key, b"fp2", 5_000, 60_000)).outcome == MISMATCH


async def test_tokens_increase_across_release_and_expiry(store: LeaseStore) -> None:
    key = store.record_key("c")
    tokens = []
    for _ in range(3):
        claim = await store.claim(key, b"", 5_000, 60_000)
        assert claim.outcome == CLAIMED
        tokens.append(claim.token)
        assert await store.release(key, claim.token)
    short = await store.claim(key, b"", 50, 60_000)
    tokens.append(short.token)
    await asyncio.sleep(0.08)
    tokens.append((await store.claim(key, b"", 5_000, 60_000)).token)
    assert tokens == sorted(set(tokens))


async def test_stale_token_cannot_complete_renew_or_release(store: LeaseStore) -> None:
    key = store.record_key("d")
    zombie = await store.claim(key, b"fp", 50, 60_000)
    await asyncio.sleep(0.08)
    fresh = await store.claim(key, b"fp", 5_000, 60_000)
    assert fresh.outcome == CLAIMED and fresh.token > zombie.token
    assert not await store.renew(key, zombie.token, 5_000)
    assert not await store.release(key, zombie.token)
    assert await store.complete(key, fresh.token, b"new", 60_000)
    assert not await store.complete(key, zombie.token, b"old", 60_000)
    assert (await store.claim(key, b"fp", 5_000, 60_000)).result == b"new"


async def test_token_survives_record_loss_thanks_to_time_floor(
    store: LeaseStore, aredis: aioredis.Redis
) -> None:
    key = store.record_key("e")
    before = (await store.claim(key, b"", 5_000, 60_000)).token
    await aredis.delete(key)
    assert (await store.claim(key, b"", 5_000, 60_000)).token > before


async def test_renew_extends_lease(store: LeaseStore) -> None:
    key = store.record_key("f")
    claim = await store.claim(key, b"", 100, 60_000)
    assert await store.renew(key, claim.token, 5_000)
    await asyncio.sleep(0.15)
    assert (await store.claim(key, b"", 100, 60_000)).outcome == BUSY


async def test_completed_record_expires(store: LeaseStore) -> None:
    key = store.record_key("g")
    claim = await store.claim(key, b"", 1_000, 1_000)
    await store.complete(key, claim.token, b"r", 100)
    await asyncio.sleep(0.2)
    assert (await store.claim(key, b"", 1_000, 1_000)).outcome == CLAIMED


async def test_bad_times_are_rejected(store: LeaseStore) -> None:
    with pytest.raises(ConfigurationError, match="positive"):
        await store.claim(store.record_key("h"), b"", 0, 10)
    with pytest.raises(ConfigurationError, match="at least the lease"):
        await store.claim(store.record_key("h"), b"", 100, 10)


async def test_unreachable_redis_raises_store_unavailable() -> None:
    from idemkit.testing import free_port

    client = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    with pytest.raises(StoreUnavailableError):
        await LeaseStore(client).claim("idemkit:{x}", b"", 100, 1000)
    await client.aclose()


def test_sync_store_has_the_same_semantics(sync_redis: redis.Redis) -> None:
    store = SyncLeaseStore(sync_redis)
    key = store.record_key("s")
    claim = store.claim(key, b"fp", 5_000, 60_000)
    assert claim.outcome == CLAIMED
    assert store.claim(key, b"fp", 5_000, 60_000).outcome == BUSY
    assert store.complete(key, claim.token, b"x", 60_000)
    assert store.claim(key, b"fp", 5_000, 60_000).result == b"x"
    assert store.claim(key, b"other", 5_000, 60_000).outcome == MISMATCH
