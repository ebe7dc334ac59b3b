"""The shop's saga steps, its database and its read model, each on a real store: steps run
again with the same key change nothing, a paused orchestrator's older token is refused
everywhere, events are recorded once with their outbox rows, and the read model applies each
event once and in order."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio as aioredis

from crdt import GCounter, SyncCrdtStore
from idemkit.errors import LeaseLostError, StaleTokenError
from idemkit.patterns import Message, StepContext, stream_name
from idemkit.patterns.saga import idempotency_key
from loadtests.counters import PREFIX, REGION
from loadtests.read_model import APPLIED, MODEL, OutOfOrder, ReadModel, sales_counter
from loadtests.shop_db import TOPIC, ShopDb
from loadtests.shop_saga import OrderSaga, inventory_key, payment_key

ORDER = {"order_id": "o-1", "product": "hot", "qty": 2, "amount": 700, "card": "", "ship_to": ""}


def _ctx(step: str, kind: str, token: int, data: dict[str, Any] = ORDER) -> StepContext:
    key = idempotency_key("place-order", data["order_id"], step, kind)  # type: ignore[arg-type]
    return StepContext("place-order", data["order_id"], step, kind, data, {}, token, 1, key)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_db(tmp_path: Path) -> ShopDb:
    db = ShopDb(f"sqlite:///{tmp_path}/shop.db")
    db.setup()
    yield db  # type: ignore[misc]
    db.close()


async def _stocked(client: aioredis.Redis, units: int) -> None:
    await client.set(inventory_key("hot", "stock"), units)


async def test_steps_called_again_with_their_keys_change_nothing(
    aredis: aioredis.Redis, sqlite_db: ShopDb
) -> None:
    await _stocked(aredis, 5)
    saga = OrderSaga(aredis, sqlite_db)
    for _ in range(2):  # a retry, or another orchestrator resuming the saga from its log
        await saga.reserve(_ctx("reserve", "action", 10))
        await saga.charge(_ctx("charge", "action", 10))
        await saga.confirm(_ctx("confirm", "action", 10))
    assert int(await aredis.get(inventory_key("hot", "stock"))) == 3
    assert await aredis.hget(payment_key("o-1"), "charges") == b"1"
    kinds = [e["kind"] for e in sqlite_db.run(lambda db: db.events())["o-1"]]
    assert kinds == ["reserved", "charged", "confirmed"]
    for _ in range(2):  # compensations too: once, then "nothing to undo"
        await saga.refund(_ctx("charge", "compensation", 11))
        await saga.release(_ctx("reserve", "compensation", 11))
    assert int(await aredis.get(inventory_key("hot", "stock"))) == 5
    assert await aredis.hmget(payment_key("o-1"), ["charges", "refunds"]) == [b"1", b"1"]


async def test_without_keys_a_charge_called_again_charges_again(
    aredis: aioredis.Redis, sqlite_db: ShopDb
) -> None:
    """The planted defect ``saga-no-keys``: what a resumed saga does to a card without keys."""
    saga = OrderSaga(aredis, sqlite_db, broken="saga-no-keys")
    await saga.charge(_ctx("charge", "action", 10))
    await saga.charge(_ctx("charge", "action", 10))
    assert await aredis.hget(payment_key("o-1"), "charges") == b"2"


async def test_a_paused_orchestrators_older_token_is_refused_everywhere(
    aredis: aioredis.Redis, sqlite_db: ShopDb
) -> None:
    """The zombie (token 10) was paused inside its charge step; the newer orchestrator (token
    20) found the charge's outcome unknown and compensated the order (refund, release). When
    the zombie wakes up it can change nothing."""
    await _stocked(aredis, 5)
    saga = OrderSaga(aredis, sqlite_db)
    await saga.reserve(_ctx("reserve", "action", 10))
    await saga.refund(_ctx("charge", "compensation", 20))  # nothing to refund yet
    await saga.release(_ctx("reserve", "compensation", 20))
    with pytest.raises(LeaseLostError):
        await saga.reserve(_ctx("reserve", "action", 10))  # would hold stock again
    with pytest.raises(LeaseLostError):
        await saga.charge(_ctx("charge", "action", 10))  # would charge a cancelled order
    assert int(await aredis.get(inventory_key("hot", "stock"))) == 5
    assert await aredis.hget(payment_key("o-1"), "charges") is None
    with pytest.raises(StaleTokenError):
        sqlite_db.run(lambda db: db.record(ORDER, "confirmed", 10))
    kinds = [e["kind"] for e in sqlite_db.run(lambda db: db.events())["o-1"]]
    assert kinds == ["reserved", "released"]


async def test_definitive_failures_are_step_failures(
    aredis: aioredis.Redis, sqlite_db: ShopDb
) -> None:
    from idemkit.patterns import StepFailed

    await _stocked(aredis, 1)
    saga = OrderSaga(aredis, sqlite_db)
    with pytest.raises(StepFailed, match="out of stock"):
        await saga.reserve(_ctx("reserve", "action", 1))
    declined = {**ORDER, "card": "declined"}
    with pytest.raises(StepFailed, match="card declined"):
        await saga.charge(_ctx("charge", "action", 1, declined))
    far = {**ORDER, "ship_to": "atlantis"}
    with pytest.raises(StepFailed, match="no carrier"):
        await saga.confirm(_ctx("confirm", "action", 1, far))
    # A release or refund of what never happened records nothing.
    await saga.release(_ctx("reserve", "compensation", 1))
    await saga.refund(_ctx("charge", "compensation", 1))
    assert sqlite_db.run(lambda db: db.events()) == {}


def test_events_commit_with_their_outbox_rows_on_postgres(pg_dsn: str) -> None:
    db = ShopDb(pg_dsn)
    db.setup()
    db.setup()  # idempotent
    try:
        assert db.run(lambda d: d.record(ORDER, "reserved", 5)) == 1
        assert db.run(lambda d: d.record(ORDER, "reserved", 5)) == 1  # recorded once
        assert db.run(lambda d: d.record(ORDER, "refunded", 5, after="charged")) is None
        assert db.run(lambda d: d.record(ORDER, "released", 6)) == 2
        events = db.run(lambda d: d.events())["o-1"]
        assert [(e["seq"], e["kind"], e["published"]) for e in events] == [
            (1, "reserved", False),
            (2, "released", False),
        ]
        assert db.run(lambda d: d.unpublished()) == 2
        assert db.run(lambda d: d.orders())["o-1"]["status"] == "released"
    finally:
        db.close()
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT event_id, topic, key, payload FROM idemkit_outbox ORDER BY id"
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("o-1:reserved", TOPIC, "o-1"),
        ("o-1:released", TOPIC, "o-1"),
    ]
    assert json.loads(rows[1][3]) == {
        "order": "o-1",
        "seq": 2,
        "kind": "released",
        "product": "hot",
        "qty": 2,
        "amount": 700,
    }


def _message(seq: int, kind: str, order: str = "o-1", qty: int = 2) -> Message:
    payload = {"order": order, "seq": seq, "kind": kind, "product": "hot", "qty": qty}
    fields = {"event_id": f"{order}:{kind}", "key": order, "payload": json.dumps(payload)}
    return Message(stream_name(TOPIC), f"{seq}-0", fields)


def _apply(model: ReadModel, message: Message) -> str:
    return (
        model.consumer("c1")
        .effect.apply(f"read-model:{message.event_id}", lambda pipe: model.apply(message, pipe))
        .outcome
    )


def test_the_read_model_applies_each_event_once_and_in_order(sync_redis: redis.Redis) -> None:
    model = ReadModel(sync_redis)
    with pytest.raises(OutOfOrder):
        _apply(model, _message(2, "charged"))  # before its predecessor: retried later
    assert _apply(model, _message(1, "reserved")) == "applied"
    assert _apply(model, _message(1, "reserved")) == "duplicate"  # redelivered
    assert _apply(model, _message(2, "charged")) == "applied"
    assert _apply(model, _message(3, "confirmed")) == "applied"
    state = json.loads(sync_redis.hget(MODEL, "o-1") or b"{}")
    assert state["history"] == ["reserved", "charged", "confirmed"]
    assert {k: int(v) for k, v in sync_redis.hgetall(APPLIED).items()} == {
        b"o-1:reserved": 1,
        b"o-1:charged": 1,
        b"o-1:confirmed": 1,
    }
    sales = SyncCrdtStore(sync_redis, region=REGION, prefix=PREFIX)
    assert sales.load(sales_counter("hot"), GCounter).value == 2


def test_the_broken_read_model_applies_a_redelivery_again(sync_redis: redis.Redis) -> None:
    model = ReadModel(sync_redis, broken="consumer-no-dedup")
    for message in [_message(1, "reserved"), _message(1, "reserved"), _message(3, "confirmed")]:
        _apply(model, message)
    assert int(sync_redis.hget(APPLIED, "o-1:reserved") or 0) == 2
    sales = SyncCrdtStore(sync_redis, region=REGION, prefix=PREFIX)
    assert sales.load(sales_counter("hot"), GCounter).value == 2  # confirmed, never charged


def test_a_sqlite_file_is_shared_by_processes(tmp_path: Path) -> None:
    """Two ShopDb on one file (two uvicorn workers, an orchestrator): WAL, no lost writes."""
    url = f"sqlite:///{tmp_path}/shop.db"
    first, second = ShopDb(url), ShopDb(url)
    first.setup()
    try:
        first.run(lambda d: d.record(ORDER, "reserved", 1))
        second.run(lambda d: d.record(ORDER, "charged", 1))
        assert [e["kind"] for e in first.run(lambda d: d.events())["o-1"]] == [
            "reserved",
            "charged",
        ]
    finally:
        first.close()
        second.close()
    mode = sqlite3.connect(f"{tmp_path}/shop.db").execute("PRAGMA journal_mode").fetchone()
    assert mode == ("wal",)
