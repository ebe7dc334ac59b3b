"""Waiting for replicas (``replicas=n``): completions, lock grants and fenced writes are
acknowledged only once a replica has them, in the same round trip; what a wait that times
out does is explicit."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from idemkit.errors import ConfigurationError, ReplicationTimeoutError, StoreUnavailableError
from idemkit.fence import Fence, SyncFence
from idemkit.lease import CLAIMED, COMPLETED, Completion, LeaseStore, SyncLeaseStore
from idemkit.lock import FencedLock, SyncFencedLock
from idemkit.middleware import as_lease_store
from idemkit.observe import Event
from idemkit.pipeline import PipelinedLeaseStore
from idemkit.replication import ReplicaAck, replica_ack
from idemkit.semaphore import FencedSemaphore
from tests.idemkit.shop import Shop, client
from tests.topologies._helpers import WITH_REPLICAS, command_calls, primary_of, replica_of

KEY = "idemkit:{replicated}"


def test_the_option_is_checked() -> None:
    assert replica_ack(0, 100) is None
    assert ReplicaAck(2, 50).command == ("WAIT", 2, 50)
    assert ReplicaAck(1, 50, aof=True).command == ("WAITAOF", 1, 1, 50)
    for replicas, timeout in ((-1, 100), (True, 100), (1, 0), (1, -5), (1, 1.5)):
        with pytest.raises(ConfigurationError):
            replica_ack(replicas, timeout)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="block forever"):
        FencedLock(redis.asyncio.Redis(), "x", replicas=1, replica_timeout_ms=0)


@WITH_REPLICAS
@pytest.mark.parametrize("store_kind", [LeaseStore, PipelinedLeaseStore])
async def test_completions_and_grants_wait_for_a_replica(
    aredis: Any, topology: str, request: pytest.FixtureRequest, store_kind: type[LeaseStore]
) -> None:
    primary = primary_of(request, topology, KEY)
    store = store_kind(aredis, replicas=1, replica_timeout_ms=2000)
    # First use loads the scripts (a NOSCRIPT reply, then the script and its wait again).
    warm = await store.claim(KEY + ":warm", b"fp", 5_000, 60_000)
    await store.complete(KEY + ":warm", warm.token, b"r", 60_000)
    held = await store.claim_owned([KEY + ":warm-lock"], "owner", 5_000, 60_000)
    await store.renew(KEY + ":warm-lock", held.token, 5_000)
    before = command_calls(primary, "wait")
    claim = await store.claim(KEY, b"fp", 5_000, 60_000)  # claims do not wait
    assert claim.outcome == CLAIMED
    assert command_calls(primary, "wait") == before
    assert await store.complete(KEY, claim.token, b"result", 60_000) is Completion.STORED
    assert command_calls(primary, "wait") == before + 1
    assert (await store.claim(KEY, b"fp", 5_000, 60_000)).outcome == COMPLETED
    # Lock grants (owner-mode claims) and renewals wait too; releases do not.
    owned = await store.claim_owned([KEY + ":lock"], "owner", 5_000, 60_000)
    assert await store.renew(KEY + ":lock", owned.token, 5_000)
    assert await store.release(KEY + ":lock", owned.token)
    assert command_calls(primary, "wait") == before + 3


@WITH_REPLICAS
async def test_locks_semaphores_and_fences_wait_for_a_replica(
    aredis: Any, sync_redis: Any, topology: str, request: pytest.FixtureRequest
) -> None:
    primary = primary_of(request, topology, "idemkit:lock:{replicated}")
    before = command_calls(primary, "wait")
    wait = {"replicas": 1, "replica_timeout_ms": 2000}
    async with FencedLock(aredis, "replicated", **wait) as token:
        await Fence(aredis, **wait).write("replicated", token, {"a": 1})
    with SyncFencedLock(sync_redis, "replicated", **wait) as token:
        SyncFence(sync_redis, **wait).write("replicated", token, {"b": 2})
    # Different hash tags may live on other nodes: count only this one's grants.
    assert command_calls(primary, "wait") >= before + 2
    async with FencedSemaphore(aredis, "replicated-sem", 2, replicas=1, replica_timeout_ms=2000):
        pass


@WITH_REPLICAS
async def test_a_lagging_replica_times_the_wait_out_and_the_write_stays(
    aredis: Any, topology: str, request: pytest.FixtureRequest
) -> None:
    store = LeaseStore(aredis, replicas=1, replica_timeout_ms=150)
    claim = await store.claim(KEY, b"fp", 5_000, 60_000)
    replica = replica_of(request, topology, KEY)
    replica.pause()  # shorter than any failure detection of the session topologies
    try:
        started = time.monotonic()
        with pytest.raises(ReplicationTimeoutError) as raised:
            await store.complete(KEY, claim.token, b"result", 60_000)
        assert time.monotonic() - started >= 0.14
        assert raised.value.acked == 0 and raised.value.required == 1
        assert isinstance(raised.value, StoreUnavailableError)
    finally:
        replica.resume()
    # Applied on the primary all along; repeating the completion is safe and now confirmed.
    assert (await store.claim(KEY, b"fp", 5_000, 60_000)).outcome == COMPLETED
    assert await store.complete(KEY, claim.token, b"result", 60_000) is Completion.STORED


@WITH_REPLICAS
async def test_pipelined_completions_share_one_wait_per_batch(
    aredis: Any, topology: str, request: pytest.FixtureRequest
) -> None:
    store = PipelinedLeaseStore(aredis, replicas=1, replica_timeout_ms=2000)
    keys = [f"idemkit:{{replicated}}:{i}" for i in range(64)]  # one slot: one batcher
    claims = await asyncio.gather(*(store.claim(k, b"fp", 5_000, 60_000) for k in keys))
    primary = primary_of(request, topology, KEY)
    before = command_calls(primary, "wait")
    done = await asyncio.gather(
        *(store.complete(k, c.token, b"r", 60_000) for k, c in zip(keys, claims, strict=True))
    )
    assert set(done) == {Completion.STORED}
    waits = command_calls(primary, "wait") - before
    assert 1 <= waits < 16, waits


async def test_without_replicas_every_wait_times_out(aredis: aioredis.Redis) -> None:
    for store in (
        LeaseStore(aredis, replicas=1, replica_timeout_ms=20),
        as_lease_store(aredis, replicas=1, replica_timeout_ms=20),
    ):
        key = store.record_key(type(store).__name__)
        claim = await store.claim(key, b"fp", 5_000, 60_000)
        with pytest.raises(ReplicationTimeoutError, match="0 of 1 replica"):
            await store.complete(key, claim.token, b"result", 60_000)
        assert await aredis.hget(key, "s") == b"d"  # the write stays on the primary


def test_sync_store_without_replicas_times_out(sync_redis: redis.Redis) -> None:
    store = SyncLeaseStore(sync_redis, replicas=1, replica_timeout_ms=20)
    key = store.record_key("sync")
    claim = store.claim(key, b"fp", 5_000, 60_000)
    with pytest.raises(ReplicationTimeoutError):
        store.complete(key, claim.token, b"result", 60_000)
    assert sync_redis.hget(key, "s") == b"d"
    sync_redis.script_flush()  # NOSCRIPT: loaded again, then waited for again
    with pytest.raises(ReplicationTimeoutError):
        store.complete(key, claim.token, b"result", 60_000)


async def test_a_grant_no_replica_confirmed_is_retried_until_the_timeout_then_raises(
    aredis: aioredis.Redis, sync_redis: redis.Redis
) -> None:
    lock = FencedLock(aredis, "unreplicated", replicas=1, replica_timeout_ms=20)
    with pytest.raises(ReplicationTimeoutError):
        await lock.acquire(timeout=0.2)
    assert not lock.held
    # The grant stays on the primary until its lease ends: nobody else gets the lock early.
    other = FencedLock(aredis, "unreplicated")
    with pytest.raises(Exception, match="not acquired"):
        await other.acquire(blocking=False)
    sync_lock = SyncFencedLock(sync_redis, "unreplicated-sync", replicas=1, replica_timeout_ms=20)
    with pytest.raises(ReplicationTimeoutError):
        sync_lock.acquire(timeout=0.1)


async def test_fenced_writes_without_replicas_time_out_but_apply(aredis: aioredis.Redis) -> None:
    fence = Fence(aredis, replicas=1, replica_timeout_ms=20)
    with pytest.raises(ReplicationTimeoutError):
        await fence.write("res", 7, {"v": 1})
    assert await Fence(aredis).newest("res") == 7


async def test_waitaof_is_refused_clearly_where_the_server_lacks_it(
    aredis: aioredis.Redis,
) -> None:
    version = tuple(int(p) for p in (await aredis.info("server"))["redis_version"].split(".")[:2])
    if version >= (7, 2):
        pytest.skip("this server has WAITAOF")
    store = LeaseStore(aredis, replicas=1, replica_timeout_ms=20, replica_aof=True)
    key = store.record_key("aof")
    claim = await store.claim(key, b"fp", 5_000, 60_000)
    with pytest.raises(ConfigurationError, match=r"WAITAOF \(Redis >= 7.2\)"):
        await store.complete(key, claim.token, b"r", 60_000)


async def test_middleware_answers_and_reports_an_unreplicated_completion(
    aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """No replica confirms (none exists): the response still goes out (its status line left
    before the completion was written), the request's outcome is ``store_failed``, the
    completion is retried in the background (and reported) until the lease ends, and a
    retry replays the result, which the primary holds."""
    events: list[Event] = []
    shop = Shop()
    store = as_lease_store(aredis, replicas=1, replica_timeout_ms=20)
    app = shop.app(store=store, observer=events.append, lease=0.5)
    caplog.set_level(logging.WARNING, "idemkit")
    async with client(app) as c:
        headers = {"Idempotency-Key": "unreplicated"}
        first = await c.post("/payments", content=b"x", headers=headers)
        assert first.status_code == 201
        again = await c.post("/payments", content=b"x", headers=headers)
        assert again.headers["idempotent-replayed"] == "true"
        await asyncio.sleep(0.8)  # the background retries end with the lease
    assert shop.calls["pay"] == 1
    outcomes = [(e.name, e.outcome) for e in events]
    assert ("idempotency.request", "store_failed") in outcomes
    assert ("idempotency.completion", "store_failed") in outcomes
    assert "replica(s) acknowledged" in caplog.text


@WITH_REPLICAS
async def test_middleware_with_a_replica_reports_executed(aredis: Any) -> None:
    events: list[Event] = []
    shop = Shop()
    app = shop.app(
        store=as_lease_store(aredis, replicas=1, replica_timeout_ms=2000), observer=events.append
    )
    async with client(app) as c:
        for i in range(6):  # keys on every primary of the cluster
            response = await c.post(
                "/payments", content=b"x", headers={"Idempotency-Key": f"rep-{i}"}
            )
            assert response.status_code == 201
    requests = [e.outcome for e in events if e.name == "idempotency.request"]
    assert requests == ["executed"] * 6
    with pytest.raises(ConfigurationError, match="replicas= applies to a client"):
        as_lease_store(LeaseStore(aredis), replicas=1)
