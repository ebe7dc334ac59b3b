"""The transaction patterns (outbox relay, idempotent consumer, saga) on single Redis, Cluster
and Sentinel alike, and the rule that lets them run on a Cluster: every script and every
transaction touches keys of one hash slot."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from redis.client import Pipeline
from redis.crc import key_slot

from idemkit.fence import Fence
from idemkit.lease import LeaseStore
from idemkit.lock import FencedLock
from idemkit.patterns import (
    EffectContext,
    LeasedEffect,
    Message,
    RedisEffect,
    RedisSagaLog,
    Relay,
    Saga,
    SagaOrchestrator,
    StepContext,
    StepFailed,
    StreamConsumer,
    outbox,
    stream_name,
)
from idemkit.semaphore import FencedSemaphore

pytestmark = pytest.mark.topologies

STREAM = stream_name("orders")


def _slots(*keys: str) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


async def test_every_primitive_keeps_its_keys_in_one_slot(aredis: Any) -> None:
    lock = FencedLock(aredis, "orders")
    assert len(_slots(*lock.keys, lock.signal_key)) == 1
    sem = FencedSemaphore(aredis, "pool", 5)
    assert len(_slots(*sem.keys, sem.signal_key)) == 1
    assert len(_slots(Fence(aredis).key("orders"), lock.keys[0])) == 1  # same name, same slot
    record = LeaseStore(aredis).record_key("caller:key")
    assert record.endswith("{caller:key}")
    # The relay's publish script and the consumer's dead-letter transaction.
    assert len(_slots(STREAM, f"{STREAM}:fence", f"{STREAM}:dead")) == 1
    saga = RedisSagaLog(aredis)
    assert saga.fence.key("o-1").endswith("{o-1}")


def test_the_relay_publishes_in_order(sync_redis: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.db")

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=30)

    conn = connect()
    outbox.setup(conn)
    for i in range(20):
        outbox.add(conn, "orders", {"i": i}, key="k")
    conn.commit()
    conn.close()
    Relay(connect, sync_redis, batch_size=7, lease_ms=2_000).run(max_seconds=0.5)
    published = [json.loads(fields[b"payload"]) for _, fields in sync_redis.xrange(STREAM)]
    assert [p["i"] for p in published] == list(range(20))


def test_the_consumer_applies_each_event_once_and_dead_letters_poison(sync_redis: Any) -> None:
    for event_id in ("e1", "e2", "e1", "poison"):
        sync_redis.xadd(STREAM, {"event_id": event_id, "key": "k", "payload": "{}"})

    def handler(message: Message, pipe: Pipeline) -> None:
        if message.event_id == "poison":
            raise ValueError("cannot apply")
        # On a Cluster the effect's keys share the stream's hash tag with the dedup marker.
        pipe.hincrby("{orders}:effects", message.event_id, 1)

    effect = RedisEffect(sync_redis, prefix="idemkit:applied:{orders}:")
    consumer = StreamConsumer(
        sync_redis, STREAM, "g", handler, effect, claim_idle_ms=1, max_deliveries=2
    )
    consumer.ensure_group()
    for _ in range(6):
        consumer._next_claim = 0
        for message in consumer.claim_stale() or consumer.read_new(10):
            consumer.handle(message)
    assert sync_redis.hgetall("{orders}:effects") == {b"e1": b"1", b"e2": b"1"}
    assert [f[b"event_id"] for _, f in sync_redis.xrange(f"{STREAM}:dead")] == [b"poison"]
    assert sync_redis.xpending(STREAM, "g")["pending"] == 0


def test_a_leased_effect_runs_once(sync_redis: Any) -> None:
    effect = LeasedEffect(sync_redis, lease_ms=5_000)
    calls: list[int] = []

    def charge(ctx: EffectContext) -> int:
        calls.append(ctx.token)
        return 42

    assert effect.apply("pay-1", charge).outcome == "applied"
    again = effect.apply("pay-1", charge)
    assert (again.outcome, again.result) == ("duplicate", 42)
    assert len(calls) == 1


async def test_a_saga_completes_and_compensates(aredis: Any) -> None:
    calls: list[str] = []

    def step(name: str, fail: bool = False) -> Any:
        async def run(ctx: StepContext) -> str:
            calls.append(name)
            if fail:
                raise StepFailed("no stock")
            return name

        return run

    ok = Saga("ok")
    ok.add("reserve", step("reserve"), compensation=step("unreserve"))
    ok.add("charge", step("charge"), compensation=step("refund"))
    bad = Saga("bad")
    bad.add("reserve", step("reserve"), compensation=step("unreserve"))
    bad.add("ship", step("ship", fail=True), compensation=step("unship"))
    orchestrator = SagaOrchestrator(aredis, [ok, bad])
    assert (await orchestrator.run("ok", "s-1", {})).status == "completed"
    assert (await orchestrator.run("ok", "s-1", {})).status == "completed"  # replayed
    assert (await orchestrator.run("bad", "s-2", {})).status == "compensated"
    assert calls == ["reserve", "charge", "reserve", "ship", "unreserve"]


def test_a_redis_effect_handler_may_end_by_returning_the_pipeline(sync_redis: Any) -> None:
    effect = RedisEffect(sync_redis, prefix="idemkit:applied:{n}:")
    applied = effect.apply("once", lambda pipe: pipe.incr("{n}:count"))
    assert (applied.outcome, applied.result) == ("applied", None)
    assert effect.apply("once", lambda pipe: pipe.incr("{n}:count")).outcome == "duplicate"
    assert sync_redis.get("{n}:count") == b"1"
