"""The transaction-patterns check catches what it claims to: every violation kind on a doctored
audit, and a clean pass on the real shop (saga, outbox, relay, consumer, CRDT counters)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from loadtests.service import create_app
from loadtests.verify import Acks, verify_patterns

Doc = dict[str, Any]


def _event(order: str, seq: int, kind: str, outbox_id: int) -> dict[str, Any]:
    return {
        "seq": seq,
        "kind": kind,
        "event_id": f"{order}:{kind}",
        "outbox_id": outbox_id,
        "published": True,
    }


def healthy() -> Doc:
    """Three orders as the shop's audit reports them: completed, declined, out of stock."""
    o1 = [_event("o1", 1, "reserved", 1), _event("o1", 2, "charged", 3)]
    o1.append(_event("o1", 3, "confirmed", 5))
    o2 = [_event("o2", 1, "reserved", 2), _event("o2", 2, "released", 4)]

    def order(status: str, failed: str | None, error: str | None, **rest: Any) -> Any:
        return {
            "saga": {"status": status, "failed_step": failed, "error": error},
            "product": "hot",
            "qty": 2,
            "charges": 0,
            "refunds": 0,
            "reserved": 0,
            "sql": None,
            "events": [],
            **rest,
        }

    events = [*o1, *o2]
    return {
        "settle": {
            "unfinished_sagas": 0,
            "parked_sagas": 0,
            "unpublished_events": 0,
            "stream_lag": 0,
            "stream_pending": 0,
            "settled": True,
        },
        "orders": {
            "o1": order(
                "completed",
                None,
                None,
                charges=1,
                reserved=2,
                sql={"status": "confirmed"},
                events=o1,
            ),
            "o2": order(
                "compensated", "charge", "card declined", sql={"status": "released"}, events=o2
            ),
            "o3": order("compensated", "reserve", "out of stock"),
        },
        "model": {
            "orders": {
                "o1": {"seq": 3, "history": ["reserved", "charged", "confirmed"]},
                "o2": {"seq": 2, "history": ["reserved", "released"]},
            },
            "applied": {e["event_id"]: 1 for e in events},
            "published": {e["event_id"]: 1 for e in events},
            "sales": {"hot": 2},
            "in_progress": 0,
            "dead_letters": 0,
            "early": 0,
            "counters": "crdt",
        },
    }


ACKS = Acks(orders={"o1"}, accepted={"o1", "o2", "o3"})


def test_a_healthy_audit_passes() -> None:
    result = verify_patterns(healthy(), ACKS)
    assert result.ok, result.lines()
    assert result.checks["sagas"].startswith("3 orders: 1 completed, 2 compensated")
    assert "5 events recorded with their orders, 5 published" in result.checks["outbox"]
    assert "sales counters (crdt) 2 units = confirmed orders 2" in result.checks["read model"]


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value

    return change


def _append_history(order: str, kind: str) -> Callable[[Doc], None]:
    def change(doc: Doc) -> None:
        doc["model"]["orders"][order]["history"].append(kind)

    return change


def _swap_history(doc: Doc) -> None:
    history = doc["model"]["orders"]["o1"]["history"]
    history[1], history[2] = history[2], history[1]


def _outbox_ids_swapped(doc: Doc) -> None:
    events = doc["orders"]["o1"]["events"]
    events[0]["outbox_id"], events[1]["outbox_id"] = 9, 7


def _no_saga(doc: Doc) -> None:
    doc["orders"]["o3"]["saga"] = None


VIOLATIONS: dict[str, Callable[[Doc], None]] = {
    "not-settled": _set("settle.settled", False),
    "saga-unfinished": _set("orders.o1.saga.status", "running"),
    "saga-parked": _set("orders.o2.saga.status", "parked"),
    "saga-missing": _no_saga,
    "completed-saga-incomplete": _set("orders.o1.reserved", 0),
    "compensation-incomplete": _set("orders.o2.reserved", 2),
    "double-charge": _set("orders.o1.charges", 2),
    "double-refund": _set("orders.o2.refunds", 2),
    "charge-without-order": _set("orders.o2.charges", 1),
    "outbox-unpublished": _set("settle.unpublished_events", 3),
    "outbox-order": _outbox_ids_swapped,
    "event-not-published": _set("model.published.o1:charged", 0),
    "event-not-applied": _set("model.applied.o2:released", 0),
    "event-applied-twice": _set("model.applied.o1:confirmed", 2),
    "phantom-event": _set("model.applied.o9:reserved", 1),
    "per-key-order": _swap_history,
    "model-mismatch": _append_history("o2", "charged"),
    "sales-counter": _set("model.sales.hot", 4),
    "in-progress-counter": _set("model.in_progress", 1),
    "dead-lettered": _set("model.dead_letters", 1),
}


@pytest.mark.parametrize("kind", sorted(VIOLATIONS))
def test_each_violation_is_caught(kind: str) -> None:
    doc = copy.deepcopy(healthy())
    VIOLATIONS[kind](doc)
    result = verify_patterns(doc, ACKS)
    assert kind in result.counts, result.lines()


async def _place(http: httpx.AsyncClient, order_id: str, **extra: Any) -> httpx.Response:
    body = {"order_id": order_id, "product": extra.pop("product", "hot"), "qty": 1, **extra}
    return await http.post("/orders", json=body, headers={"Idempotency-Key": f"k-{order_id}"})


async def _audit_after_orders(client: Any) -> tuple[Doc, Acks, list[httpx.Response]]:
    app = create_app(client, stock={"hot": 3, "sku": 100})
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http,
    ):
        replies = await asyncio.gather(*(_place(http, f"rush-{i}") for i in range(5)))
        replies += [
            await _place(http, "declined", product="sku", card="declined"),
            await _place(http, "far", product="sku", ship_to="atlantis"),
        ]
        for _ in range(100):
            if (await http.get("/_patterns?summary=1")).json()["settled"]:
                break
            await asyncio.sleep(0.05)
        doc = (await http.get("/_patterns")).json()
    acks = Acks(
        orders={r.json()["order_id"] for r in replies if r.status_code == 201},
        accepted={r.json()["order_id"] for r in replies if r.status_code < 300},
    )
    return doc, acks, replies


async def test_the_shop_passes_on_real_redis(aredis: aioredis.Redis) -> None:
    doc, acks, replies = await _audit_after_orders(aredis)
    statuses = sorted(r.json()["status"] for r in replies)
    assert (
        statuses
        == ["cancelled", "created", "created", "created", "declined"] + ["out_of_stock"] * 2
    )
    result = verify_patterns(doc, acks)
    assert result.ok, result.lines()
    assert doc["model"]["counters"] == "crdt" and doc["model"]["sales"]["hot"] == 3
    far = doc["orders"]["far"]
    assert [e["kind"] for e in far["events"]] == ["reserved", "charged", "refunded", "released"]
    assert far["charges"] == far["refunds"] == 1 and far["reserved"] == 0


async def test_the_shop_passes_on_the_embedded_store() -> None:
    from idemkit.embedded import embedded_redis

    doc, acks, _ = await _audit_after_orders(embedded_redis())
    result = verify_patterns(doc, acks)
    assert result.ok, result.lines()
    assert doc["model"]["counters"] == "plain (embedded store)"
