"""The verifier catches what it claims to catch, on the deliberately broken shop."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from integrations.locust import Ack, CheckContext, Verification
from loadtests.service import create_app, read_ledger
from loadtests.verify import Acks, acks_from, verify

STOCK = {"hot": 3}


def _client(app: object) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://shop.test")


async def _retried_payment(client: aioredis.Redis, broken: str | None) -> Acks:
    app = create_app(client, broken=broken, stock=STOCK)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"payment_id": "pay-1", "amount": 100}
    async with app.router.lifespan_context(app), _client(app) as http:
        first = await http.post("/payments", json=body, headers=key)
        retry = await http.post("/payments", json=body, headers=key)
    assert first.status_code == retry.status_code == 201
    return Acks(payments={"pay-1"})


async def _order_rush(client: aioredis.Redis, broken: str | None) -> Acks:
    app = create_app(client, broken=broken, stock=STOCK)
    async with app.router.lifespan_context(app), _client(app) as http:
        replies = await asyncio.gather(
            *(
                http.post(
                    "/orders",
                    json={"order_id": f"o{i}", "product": "hot", "qty": 1},
                    headers={"Idempotency-Key": f"k{i}"},
                )
                for i in range(10)
            )
        )
    return Acks(orders={r.json()["order_id"] for r in replies if r.status_code == 201})


async def test_healthy_shop_verifies(aredis: aioredis.Redis) -> None:
    acks = await _retried_payment(aredis, None)
    orders = await _order_rush(aredis, None)
    acks.orders = orders.orders
    result = verify(await read_ledger(aredis), acks)
    assert result.ok, result.lines()
    assert len(orders.orders) == 3


async def test_double_charge_is_caught(aredis: aioredis.Redis) -> None:
    acks = await _retried_payment(aredis, "double-charge")
    result = verify(await read_ledger(aredis), acks)
    assert not result.ok
    assert result.counts["double-charge"] == 1
    assert "pay-1 charged 2 times" in "\n".join(result.lines())


async def test_oversell_is_caught(aredis: aioredis.Redis) -> None:
    acks = await _order_rush(aredis, "oversell")
    assert len(acks.orders) > 3  # the broken shop really did sell what it did not have
    result = verify(await read_ledger(aredis), acks)
    assert result.counts["oversell"] == 1, result.lines()


def test_lost_and_duplicated_effects_are_caught() -> None:
    ledger = {
        "charges": {"p1": 1},
        "orders": {"o1": "hot"},
        "order_runs": {"o1": 2},
        "increments": {"likes/a": 1, "likes/b": 2},
        "counters": {"likes": 4},
        "inventory": {
            "hot": {"initial": 5, "stock": 3, "sold": 1, "reservations": {"o1": 1, "o9": 1}}
        },
        "events": {},
    }
    acks = Acks(payments={"p1", "p2"}, orders={"o1", "o2"}, increments={"likes/a", "likes/c"})
    result = verify(ledger, acks)
    assert dict(result.counts) == {
        "lost-payment": 1,
        "lost-order": 1,
        "increment-applied-twice": 1,
        "lost-increment": 1,
        "counter-mismatch": 1,
    }
    assert "1 handler re-runs" in result.checks["orders"]
    assert "1 reservations left without an order" in result.checks["inventory"]


def test_kit_acknowledgements_become_shop_acks() -> None:
    acks = acks_from(
        [
            Ack("POST /payments", "/payments", 201, {"payment_id": "p1", "amount": 5}, {}),
            Ack("POST /orders", "/orders", 201, {"order_id": "o1"}, {"status": "created"}),
            Ack("POST /orders", "/orders", 200, {"order_id": "o2"}, {"status": "out_of_stock"}),
            Ack("POST /orders", "/orders", 202, {"order_id": "o3"}, {"status": "pending"}),
            Ack("x", "/counters/likes/increment", 200, {"id": "i1"}, {"value": 3}),
            Ack("GET /other", "/other", 200, None, None),
        ]
    )
    assert acks == Acks(
        payments={"p1"}, orders={"o1"}, increments={"likes/i1"}, accepted={"o1", "o2", "o3"}
    )


def test_the_ledger_hook_reads_the_running_shop(redis_url: str, tmp_path: Path) -> None:
    """The hook as Locust calls it: over HTTP, against the shop in its own process."""
    from loadtests.verify import ledger_check
    from tests.integrations.locust_support import serve

    app = "loadtests.service:app_factory"
    log = tmp_path / "shop.log"
    with serve(app, "--factory", log=log, REDIS_URL=redis_url, SHOP_BROKEN="double-charge") as base:
        key = {"Idempotency-Key": str(uuid.uuid4())}
        for _ in range(2):
            httpx.post(f"{base}/payments", json={"payment_id": "p9", "amount": 1}, headers=key)
        acks = [Ack("POST /payments", "/payments", 201, {"payment_id": "p9"}, {})]
        context = CheckContext(base, acks)
        result = Verification()
        ledger_check(context, result)
    assert dict(result.counts) == {"double-charge": 1}
    assert "p9 charged 2 times" in result.violations["double-charge"][0]
    assert "middleware events (all workers)" in context.info
