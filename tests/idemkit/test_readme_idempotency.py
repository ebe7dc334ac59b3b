"""The README's idempotency examples, run as written and driven through their frameworks
against the test session's redis-server."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.readme import close_clients, run

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


@pytest.fixture(autouse=True)
def _redis_url(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://readme")


_close = close_clients


async def test_middleware_example() -> None:
    ns = await run("middleware")
    async with client(ns["app"]) as c:
        first = await c.post("/payments", json={"amount": 10}, headers={"Idempotency-Key": KEY})
        again = await c.post("/payments", json={"amount": 10}, headers={"Idempotency-Key": KEY})
        other = await c.post("/payments", json={"amount": 99}, headers={"Idempotency-Key": KEY})
        missing = await c.post("/payments", json={"amount": 10})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    assert (other.status_code, missing.status_code) == (422, 400)
    assert len(ns["charges"]) == 1
    await _close(ns)


async def test_decorator_fastapi_example() -> None:
    ns = await run("decorator-fastapi")
    async with client(ns["app"]) as c:
        first = await c.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "o1"})
        again = await c.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "o1"})
        sold = await c.post("/orders", json={"sku": "sold-out"}, headers={"Idempotency-Key": "o2"})
        sold_again = await c.post(
            "/orders", json={"sku": "sold-out"}, headers={"Idempotency-Key": "o2"}
        )
        missing = await c.post("/orders", json={"sku": "a"})
    assert first.status_code == again.status_code == 201
    assert again.headers["location"] == "/orders/1" and again.json() == first.json()
    assert sold.status_code == sold_again.status_code == 409
    assert sold_again.headers["idempotent-replayed"] == "true"
    assert missing.status_code == 400 and len(ns["orders"]) == 1
    await _close(ns)


async def test_decorator_litestar_example() -> None:
    ns = await run("decorator-litestar")
    async with client(ns["app"]) as c:
        first = await c.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "l1"})
        again = await c.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": "l1"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    await _close(ns)


async def test_decorator_functions_example(capsys: pytest.CaptureFixture[str]) -> None:
    ns = await run("decorator-functions")  # asserts a replayed Receipt itself
    assert capsys.readouterr().out.count("handled m-1") == 1
    await _close(ns)


async def test_fencing_example() -> None:
    ns = await run("fencing")
    async with client(ns["app"]) as c:
        response = await c.post("/payments/p1/charge", headers={"Idempotency-Key": "f1"})
    assert response.status_code == 201
    assert await ns["fence"].newest("payment:p1") > 0
    await _close(ns)


async def test_stable_principal_example() -> None:
    ns = await run("stable-principal")
    async with client(ns["app"]) as c:
        first = await c.post(
            "/pay", headers={"Idempotency-Key": KEY, "Authorization": "Bearer token-v1"}
        )
        refreshed = await c.post(
            "/pay", headers={"Idempotency-Key": KEY, "Authorization": "Bearer token-v2"}
        )
    assert first.status_code == 201
    assert refreshed.headers["idempotent-replayed"] == "true"
    await _close(ns)
