"""What only the middleware does: it covers a whole app, so it decides which paths need a key
and which it leaves alone, and it accepts a custom lease store."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from idemkit.lease import LeaseStore
from tests.idemkit.shop import Shop, client

# Every test here runs on single Redis, Cluster and Sentinel (see tests/conftest.py).
pytestmark = pytest.mark.topologies

KEY = {"Idempotency-Key": "8e03978e-40d5-43e8-bc93-6894a57f9324"}


@pytest.fixture
def shop() -> Shop:
    return Shop()


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status and doc["detail"] and doc["type"].startswith("urn:idemkit:")
    return doc


async def test_missing_key_passes_through_unless_required(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis, require_key=["/payments"])) as c:
        assert (await c.post("/read")).status_code == 200
        doc = problem(await c.post("/payments", content=b"x"), 400)
    assert "Idempotency-Key" in doc["detail"]
    assert shop.calls["pay"] == 0


async def test_require_key_everywhere_with_exempt_paths(shop: Shop, aredis: aioredis.Redis) -> None:
    app = shop.app(store=aredis, require_key=True, exempt_paths=["/read"])
    async with client(app) as c:
        problem(await c.post("/payments", content=b"x"), 400)
        assert (await c.post("/read")).status_code == 200
        await c.post("/read", headers=KEY)
        await c.post("/read", headers=KEY)
    assert shop.calls["read"] == 3


async def test_accepts_a_lease_store_with_a_custom_prefix(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=LeaseStore(aredis, prefix="shop:"))) as c:
        await c.post("/payments", content=b"x", headers=KEY)
    assert [k.decode()[:6] for k in await aredis.keys("*")] == ["shop:{"]


async def test_handlers_see_their_fencing_token(aredis: aioredis.Redis) -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from idemkit import IdempotencyMiddleware, fencing_token

    async def pay(request: Request) -> JSONResponse:
        return JSONResponse({"token": fencing_token(request)})

    app = Starlette(
        routes=[Route("/pay", pay, methods=["POST", "GET"])],
        middleware=[Middleware(IdempotencyMiddleware, store=aredis)],
    )
    async with client(app) as c:
        first = (await c.post("/pay", headers={"Idempotency-Key": "t1"})).json()["token"]
        second = (await c.post("/pay", headers={"Idempotency-Key": "t2"})).json()["token"]
        plain = (await c.get("/pay")).json()["token"]
    assert isinstance(first, int) and second > first
    assert plain is None
