"""@idempotent on Starlette/FastAPI endpoints and on plain async and sync functions."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from idemkit.decorator import idempotent
from idemkit.errors import ConfigurationError, KeyReuseError, RequestInFlightError

KEY = {"Idempotency-Key": "k-1"}


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_starlette_endpoint(aredis: aioredis.Redis) -> None:
    calls = Counter[str]()

    @idempotent(aredis)
    async def create(request: Request) -> Response:
        calls["create"] += 1
        return JSONResponse({"n": calls["create"], "body": (await request.body()).decode()}, 201)

    app = Starlette(routes=[Route("/orders", create, methods=["POST"])])
    async with client(app) as c:
        first = await c.post("/orders", content=b"a", headers=KEY)
        second = await c.post("/orders", content=b"a", headers=KEY)
        mismatch = await c.post("/orders", content=b"b", headers=KEY)
        missing = await c.post("/orders", content=b"a")
        invalid = await c.post("/orders", content=b"a", headers={"Idempotency-Key": '"x'})
    assert calls["create"] == 1
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.content == first.content and second.headers["idempotent-replayed"] == "true"
    assert (mismatch.status_code, missing.status_code, invalid.status_code) == (422, 400, 400)
    assert missing.headers["content-type"] == "application/problem+json"


async def test_fastapi_path_operation(aredis: aioredis.Redis) -> None:
    app = FastAPI()
    calls = Counter[str]()

    @app.post("/payments/{account}")
    @idempotent(aredis)
    async def pay(account: str, request: Request) -> dict[str, Any]:
        calls[account] += 1
        return {"account": account, "n": calls[account]}

    async with client(app) as c:
        first = await c.post("/payments/acme", headers=KEY)
        second = await c.post("/payments/acme", headers=KEY)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"account": "acme", "n": 1}
    assert calls["acme"] == 1


async def test_fastapi_endpoint_returning_a_response(aredis: aioredis.Redis) -> None:
    app = FastAPI()
    calls = Counter[str]()

    @app.post("/charges")
    @idempotent(aredis)
    async def charge(request: Request) -> Response:
        calls["charge"] += 1
        return JSONResponse({"n": calls["charge"]}, status_code=201)

    async with client(app) as c:
        first = await c.post("/charges", headers=KEY)
        second = await c.post("/charges", headers=KEY)
    assert calls["charge"] == 1 and second.json() == first.json() == {"n": 1}
    assert second.headers["idempotent-replayed"] == "true"


async def test_async_function_with_key_function(aredis: aioredis.Redis) -> None:
    calls = Counter[str]()

    @idempotent(aredis, key=lambda order_id, amount: order_id)
    async def charge(order_id: str, amount: int) -> dict[str, Any]:
        calls[order_id] += 1
        return {"order": order_id, "amount": amount, "charged": calls[order_id]}

    assert await charge("o1", 10) == {"order": "o1", "amount": 10, "charged": 1}
    assert await charge("o1", 10) == {"order": "o1", "amount": 10, "charged": 1}
    with pytest.raises(KeyReuseError, match="different arguments"):
        await charge("o1", 99)
    assert calls["o1"] == 1


async def test_async_function_in_flight_and_exception(aredis: aioredis.Redis) -> None:
    gate = asyncio.Event()
    calls = Counter[str]()

    @idempotent(aredis, key=lambda k: k)
    async def work(k: str) -> int:
        calls[k] += 1
        await gate.wait()
        if calls[k] == 1:
            raise ValueError("first attempt fails")
        return calls[k]

    first = asyncio.create_task(work("a"))
    await asyncio.sleep(0.05)
    with pytest.raises(RequestInFlightError) as info:
        await work("a")
    assert info.value.retry_after > 0
    gate.set()
    with pytest.raises(ValueError):
        await first
    assert await work("a") == 2  # the exception released the key
    assert await work("a") == 2


def test_sync_function(sync_redis: redis.Redis) -> None:
    calls = Counter[str]()

    @idempotent(sync_redis, key=lambda user, amount: f"refund-{user}")
    def refund(user: str, amount: int) -> list[Any]:
        calls[user] += 1
        return [user, amount, calls[user]]

    assert refund("ann", 5) == ["ann", 5, 1]
    assert refund("ann", 5) == ["ann", 5, 1]
    with pytest.raises(KeyReuseError):
        refund("ann", 6)


def test_sync_function_renews_its_lease(sync_redis: redis.Redis) -> None:
    started = threading.Event()
    release = threading.Event()

    @idempotent(sync_redis, key=lambda: "slow", lease=0.2)
    def slow() -> str:
        started.set()
        release.wait(5)
        return "done"

    worker = threading.Thread(target=slow)
    worker.start()
    started.wait(5)
    threading.Event().wait(0.5)  # more than two leases
    with pytest.raises(RequestInFlightError):
        slow()
    release.set()
    worker.join(5)
    assert slow() == "done"


def test_bad_configuration_is_reported(sync_redis: redis.Redis, aredis: aioredis.Redis) -> None:
    with pytest.raises(ConfigurationError, match="pass key="):
        idempotent(sync_redis)(lambda: 1)
    with pytest.raises(ConfigurationError, match="blocking client"):
        idempotent(aredis, key=lambda: "k")(lambda: 1)
    with pytest.raises(ConfigurationError, match="unknown option"):
        idempotent(aredis, ttll=5)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="ttl"):
        idempotent(aredis, ttl=1, lease=5)


async def test_unserialisable_result_is_a_clear_error(aredis: aioredis.Redis) -> None:
    from idemkit.errors import CodecError

    @idempotent(aredis, key=lambda: "obj")
    async def make() -> object:
        return object()

    with pytest.raises(CodecError, match="msgpack"):
        await make()


async def test_decorator_shares_the_middlewares_fingerprint_and_replay_rules(
    aredis: aioredis.Redis,
) -> None:
    calls = Counter[str]()

    @idempotent(aredis, fingerprint_headers=["X-Currency"], max_response_bytes=10)
    async def create(request: Request) -> Response:
        calls["create"] += 1
        return Response(b"x" * 50, status_code=201)

    app = Starlette(routes=[Route("/orders", create, methods=["POST"])])
    async with client(app) as c:
        await c.post("/orders", headers={**KEY, "X-Currency": "EUR"})
        mismatch = await c.post("/orders", headers={**KEY, "X-Currency": "USD"})
        replay = await c.post("/orders", headers={**KEY, "X-Currency": "EUR"})
        twice = await c.post(
            "/orders", headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
        )
    assert mismatch.status_code == 422
    assert replay.status_code == 201 and replay.content == b""
    assert replay.headers["idempotent-body-omitted"] == "true"
    assert twice.status_code == 400 and "more than one" in twice.json()["detail"]
    assert calls["create"] == 1
