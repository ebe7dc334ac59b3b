"""The idempotent consumer and its effects, on a real Redis and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest
import redis
from redis.client import Pipeline

from idemkit.observe import Event
from idemkit.patterns import (
    EffectContext,
    LeasedEffect,
    Message,
    RedisEffect,
    SqlEffect,
    StreamConsumer,
    stream_name,
)

STREAM = stream_name("orders")


def _publish(client: redis.Redis, *event_ids: str) -> None:
    for eid in event_ids:
        client.xadd(STREAM, {"event_id": eid, "key": "k", "payload": '{"n":1}'})


def _count(message: Message, pipe: Pipeline) -> None:
    pipe.hincrby("effects", message.event_id, 1)


def test_redis_effect_applies_each_event_once_and_acks_everything(
    sync_redis: redis.Redis,
) -> None:
    _publish(sync_redis, "e1", "e2", "e1", "e3", "e2")  # re-published copies
    consumer = StreamConsumer(
        sync_redis, STREAM, "model", _count, RedisEffect(sync_redis), block_ms=10
    )
    while consumer.poll_once(10):
        pass
    assert sync_redis.hgetall("effects") == {b"e1": b"1", b"e2": b"1", b"e3": b"1"}
    assert sync_redis.xpending(STREAM, "model")["pending"] == 0


def test_effects_of_different_groups_are_independent(sync_redis: redis.Redis) -> None:
    _publish(sync_redis, "e1")
    for group in ("a", "b"):
        consumer = StreamConsumer(
            sync_redis,
            STREAM,
            group,
            lambda m, pipe, g=group: pipe.incr(f"seen:{g}"),  # type: ignore[misc]
            RedisEffect(sync_redis),
        )
        consumer.poll_once(10)
    assert sync_redis.mget("seen:a", "seen:b") == [b"1", b"1"]


def test_concurrent_duplicates_apply_once(sync_redis: redis.Redis) -> None:
    effect = RedisEffect(sync_redis)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def run() -> None:
        client = redis.Redis(connection_pool=sync_redis.connection_pool)
        barrier.wait()
        outcomes.append(RedisEffect(client).apply("same", lambda pipe: pipe.incr("n")).outcome)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["applied"] + ["duplicate"] * 7
    assert sync_redis.get("n") == b"1"
    assert effect.apply("same", lambda pipe: pipe.incr("n")).outcome == "duplicate"


def test_sql_effect_commits_the_effect_with_the_dedup_row(
    sync_redis: redis.Redis, pg_dsn: str
) -> None:
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE totals (k TEXT PRIMARY KEY, n INT NOT NULL)")
        conn.commit()

    def apply(message: Message, conn: Any) -> None:
        conn.execute(
            "INSERT INTO totals VALUES (%s, 1) ON CONFLICT (k) DO UPDATE SET n = totals.n + 1",
            [message.key],
        )

    def fail(message: Message, conn: Any) -> None:
        apply(message, conn)
        raise RuntimeError("after the write, before the commit")

    effect = SqlEffect(lambda: psycopg.connect(pg_dsn))
    _publish(sync_redis, "e1", "e1", "e2")
    failing = StreamConsumer(
        sync_redis, STREAM, "sql", fail, effect, claim_idle_ms=1, max_deliveries=9
    )
    failing.poll_once(10)  # every write rolled back with its dedup row
    consumer = StreamConsumer(sync_redis, STREAM, "sql", apply, effect, claim_idle_ms=1)
    while consumer.poll_once(10):
        pass
    effect.close()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT n FROM totals").fetchall() == [(2,)]
    assert sync_redis.xpending(STREAM, "sql")["pending"] == 0


def test_leased_effect_replays_the_result_and_reports_busy(sync_redis: redis.Redis) -> None:
    effect = LeasedEffect(sync_redis, lease_ms=5_000)
    calls: list[EffectContext] = []

    def charge(ctx: EffectContext) -> dict[str, int]:
        calls.append(ctx)
        assert effect.apply("pay-1", charge).outcome == "busy"  # a duplicate while running
        return {"charged": 42}

    first = effect.apply("pay-1", charge)
    again = effect.apply("pay-1", charge)
    assert (first.outcome, first.result) == ("applied", {"charged": 42})
    assert (again.outcome, again.result) == ("duplicate", {"charged": 42})
    assert len(calls) == 1 and calls[0].token > 0
    assert calls[0].idempotency_key == "effect:pay-1"


def test_a_failed_leased_effect_can_run_again(sync_redis: redis.Redis) -> None:
    effect = LeasedEffect(sync_redis)
    with pytest.raises(ZeroDivisionError):
        effect.apply("x", lambda ctx: 1 / 0)
    assert effect.apply("x", lambda ctx: "ok").outcome == "applied"


def test_a_dead_consumers_pending_messages_are_claimed(sync_redis: redis.Redis) -> None:
    _publish(sync_redis, "e1", "e2")
    dead = StreamConsumer(sync_redis, STREAM, "g", _count, RedisEffect(sync_redis))
    dead.ensure_group()
    assert len(dead.read_new(10)) == 2  # read, never handled: the consumer "died"
    events: list[Event] = []
    alive = StreamConsumer(
        sync_redis,
        STREAM,
        "g",
        _count,
        RedisEffect(sync_redis),
        claim_idle_ms=50,
        observer=events.append,
    )
    assert alive.poll_once(10) == 0  # not idle long enough yet: nothing taken
    alive._next_claim = 0
    threading.Event().wait(0.1)
    assert alive.poll_once(10) == 2
    assert sync_redis.hgetall("effects") == {b"e1": b"1", b"e2": b"1"}
    assert [e.attrs["count"] for e in events if e.name == "consumer.claim"] == [2]
    assert sync_redis.xpending(STREAM, "g")["pending"] == 0


def test_a_message_that_keeps_failing_goes_to_the_dead_letter_stream(
    sync_redis: redis.Redis,
) -> None:
    _publish(sync_redis, "good", "poison")

    def handler(message: Message, pipe: Pipeline) -> None:
        if message.event_id == "poison":
            raise ValueError("cannot apply")
        _count(message, pipe)

    consumer = StreamConsumer(
        sync_redis,
        STREAM,
        "g",
        handler,
        RedisEffect(sync_redis),
        claim_idle_ms=1,
        max_deliveries=3,
    )
    consumer.ensure_group()
    outcomes = []
    for _ in range(6):
        consumer._next_claim = 0
        messages = consumer.claim_stale() or consumer.read_new(10)
        outcomes.extend(consumer.handle(m) for m in messages)
        threading.Event().wait(0.01)
    assert outcomes == ["applied", "error", "error", "dead"]
    dead = sync_redis.xrange(f"{STREAM}:dead")
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields[b"event_id"] == b"poison" and fields[b"deliveries"] == b"3"
    assert b"cannot apply" in fields[b"error"]
    assert sync_redis.xpending(STREAM, "g")["pending"] == 0
    assert sync_redis.hgetall("effects") == {b"good": b"1"}


def test_a_message_that_kills_its_consumers_is_dead_lettered_unrun(
    sync_redis: redis.Redis,
) -> None:
    _publish(sync_redis, "killer")
    ran: list[str] = []
    consumer = StreamConsumer(
        sync_redis,
        STREAM,
        "g",
        lambda m, pipe: ran.append(m.event_id),
        RedisEffect(sync_redis),
        claim_idle_ms=1,
        max_deliveries=2,
    )
    consumer.ensure_group()
    consumer.read_new(10)  # delivery 1: the consumer died
    threading.Event().wait(0.01)
    consumer.claim_stale()  # delivery 2: died again
    threading.Event().wait(0.01)
    (message,) = consumer.claim_stale()
    assert message.deliveries == 3
    assert consumer.handle(message) == "dead"
    assert ran == []
    assert sync_redis.xlen(f"{STREAM}:dead") == 1
