"""FastAPI path operations under ``Idempotency``, on uvicorn against a real redis-server, and
their OpenAPI documentation (also for routes covered by ``IdempotencyMiddleware``)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection

from idemkit import IdempotencyMiddleware
from integrations.fastapi import Idempotency, document_idempotency
from tests.integrations.servers import asgi_server

KEY = {"Idempotency-Key": "k-1"}


class Order(BaseModel):
    sku: str
    qty: int = 1


class User(BaseUser):
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def identity(self) -> str:
        return self.name


class SessionCookie(AuthenticationBackend):
    """A logged-in user is named by the ``session`` cookie (a stand-in for real sessions)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        name = conn.cookies.get("session")
        return (AuthCredentials(["authenticated"]), User(name)) if name else None


def shop(store: Any, calls: Counter[str]) -> FastAPI:
    idempotency = Idempotency(store, lease=2.0)
    app = FastAPI()
    app.add_middleware(AuthenticationMiddleware, backend=SessionCookie())
    document_idempotency(app)

    @app.post("/orders", status_code=201)
    @idempotency(required=True)
    async def create_order(order: Order, request: Request) -> dict[str, Any]:
        calls["orders"] += 1
        if order.sku == "slow":
            import asyncio

            await asyncio.sleep(0.5)
        user = request.user.identity if request.user.is_authenticated else None
        return {"n": calls["orders"], "sku": order.sku, "user": user}

    @app.patch("/orders/{order_id}")
    @idempotency(required=False)
    async def change_order(order_id: int, order: Order) -> dict[str, Any]:
        calls["changes"] += 1
        return {"id": order_id, "qty": order.qty, "n": calls["changes"]}

    @app.post("/plain")
    async def plain() -> dict[str, str]:
        return {"idempotent": "no"}

    return app


@pytest.fixture
def served(redis_url: str) -> Iterator[tuple[str, Counter[str]]]:
    calls: Counter[str] = Counter()
    store = aioredis.Redis.from_url(redis_url)
    with asgi_server(shop(store, calls), on_shutdown=store.aclose) as url:
        yield url, calls


def test_replay_409_422_and_400_through_fastapi(served: tuple[str, Counter[str]]) -> None:
    url, calls = served
    with httpx.Client(base_url=url, timeout=10) as http:
        first = http.post("/orders", json={"sku": "a"}, headers=KEY)
        again = http.post("/orders", json={"sku": "a"}, headers=KEY)
        reused = http.post("/orders", json={"sku": "b"}, headers=KEY)
        missing = http.post("/orders", json={"sku": "a"})
        malformed = http.post("/orders", json={"sku": "a"}, headers={"Idempotency-Key": ""})
        optional = http.patch("/orders/7", json={"sku": "a", "qty": 2})
        answers: list[httpx.Response] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                http.post("/orders", json={"sku": "slow"}, headers={"Idempotency-Key": "s"})
            )
        )
        slow.start()
        while calls["orders"] < 2:
            time.sleep(0.01)
        busy = http.post("/orders", json={"sku": "slow"}, headers={"Idempotency-Key": "s"})
        slow.join(10)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (
        reused.status_code == 422 and reused.headers["content-type"] == "application/problem+json"
    )
    assert missing.status_code == malformed.status_code == 400
    assert optional.status_code == 200
    assert busy.status_code == 409 and int(busy.headers["retry-after"]) >= 1
    assert answers[0].status_code == 201
    assert calls["orders"] == 2


def test_two_logged_in_users_with_one_key_get_two_executions(
    served: tuple[str, Counter[str]],
) -> None:
    url, calls = served
    results = {}
    for name in ("alice", "bob", "alice", "bob"):
        with httpx.Client(base_url=url, cookies={"session": name}, timeout=10) as http:
            answer = http.post("/orders", json={"sku": "a"}, headers=KEY)
        results.setdefault(name, []).append(answer)
    assert calls["orders"] == 2
    alice, bob = results["alice"], results["bob"]
    assert alice[0].json()["user"] == "alice" and bob[0].json()["user"] == "bob"
    assert alice[1].json() == alice[0].json() and bob[1].json() == bob[0].json()
    assert alice[1].headers["idempotent-replayed"] == bob[1].headers["idempotent-replayed"]


def test_openapi_shows_the_header_and_the_problem_answers(
    served: tuple[str, Counter[str]],
) -> None:
    url, _ = served
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    create = schema["paths"]["/orders"]["post"]
    change = schema["paths"]["/orders/{order_id}"]["patch"]
    plain = schema["paths"]["/plain"]["post"]

    def header(operation: dict[str, Any]) -> dict[str, Any] | None:
        found = [p for p in operation.get("parameters", []) if p["name"] == "Idempotency-Key"]
        return found[0] if found else None

    created, changed = header(create), header(change)
    assert created is not None and created["in"] == "header" and created["required"] is True
    assert changed is not None and changed["required"] is False
    assert header(plain) is None and "409" not in plain["responses"]
    for status in ("400", "409", "413", "422", "503"):
        content = create["responses"][status]["content"]["application/problem+json"]
        assert content["schema"]["$ref"] == "#/components/schemas/IdempotencyProblem"
    # FastAPI's own validation answer stays documented beside idemkit's 422.
    assert "application/json" in create["responses"]["422"]["content"]
    assert "Retry-After" in create["responses"]["409"]["headers"]
    assert "Idempotent-Replayed" in create["responses"]["201"]["headers"]
    assert schema["components"]["schemas"]["IdempotencyProblem"]["required"]
    docs = httpx.get(f"{url}/docs", timeout=10)
    assert docs.status_code == 200 and "/openapi.json" in docs.text


def test_middleware_users_document_the_routes_it_covers(aredis: aioredis.Redis) -> None:
    app = FastAPI()
    app.add_middleware(
        IdempotencyMiddleware, store=aredis, require_key=["/payments*"], exempt_paths=["/health*"]
    )

    @app.post("/payments")
    async def pay() -> dict[str, int]:
        return {"ok": 1}

    @app.post("/notes")
    async def note() -> dict[str, int]:
        return {"ok": 1}

    @app.get("/payments")
    async def list_payments() -> list[int]:
        return []

    @app.post("/health/ping")
    async def ping() -> dict[str, int]:
        return {"ok": 1}

    document_idempotency(app)
    document_idempotency(app)  # twice is once
    paths = app.openapi()["paths"]

    def key(path: str, method: str) -> Any:
        params = paths[path][method].get("parameters", [])
        return next((p["required"] for p in params if p["name"] == "Idempotency-Key"), None)

    assert key("/payments", "post") is True and key("/notes", "post") is False
    assert key("/payments", "get") is None and key("/health/ping", "post") is None
    assert [p["name"] for p in paths["/payments"]["post"]["parameters"]] == ["Idempotency-Key"]
