"""Litestar apps with ``IdempotencyPlugin``, through Litestar's test client against a real
redis-server: replay, 409, 422, 400, scoping by the authenticated user, and what releases."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar import Litestar, Request, post
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware
from litestar.testing import TestClient

from integrations.litestar import IdempotencyPlugin

KEY = {"Idempotency-Key": "k-1"}


@dataclass
class User:
    id: int
    name: str  # two users may share it: never the scope


USERS = {"alice-session": User(1, "Sam"), "bob-session": User(2, "Sam")}


class CookieAuth(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
        user = USERS.get(connection.cookies.get("session", ""))
        if user is None:
            from litestar.exceptions import NotAuthorizedException

            raise NotAuthorizedException()
        return AuthenticationResult(user=user, auth=None)


slow_started = threading.Event()


def build(store: aioredis.Redis, calls: Counter[str], **options: Any) -> Litestar:
    @post("/orders", status_code=201)
    async def create_order(request: Request[User, Any, Any]) -> dict[str, Any]:
        data = await request.json()
        calls["orders"] += 1
        if data.get("slow"):
            slow_started.set()
            await asyncio.sleep(0.4)
        return {"n": calls["orders"], "user": request.user.id, "data": data}

    @post("/boom")
    async def boom() -> None:
        calls["boom"] += 1
        raise RuntimeError("handler crashed")

    @post("/refused")
    async def refused() -> None:
        calls["refused"] += 1
        raise HTTPException(status_code=409, detail="out of stock")

    return Litestar(
        route_handlers=[create_order, boom, refused],
        middleware=[DefineMiddleware(CookieAuth)],
        plugins=[IdempotencyPlugin(store, user_id=lambda user: user.id, **options)],
        logging_config=None,
    )


ALICE = {"Cookie": "session=alice-session"}
BOB = {"Cookie": "session=bob-session"}


@contextmanager
def serving(redis_url: str, calls: Counter[str], **options: Any) -> Iterator[TestClient[Litestar]]:
    """The app in Litestar's test client (its own event loop in a portal thread), with an
    asyncio Redis client that lives and is closed on that loop."""
    store = aioredis.Redis.from_url(redis_url)
    with TestClient(build(store, calls, **options)) as http:
        yield http
        http.blocking_portal.call(store.aclose)


@pytest.fixture
def calls() -> Counter[str]:
    slow_started.clear()
    return Counter()


def test_replay_409_422_and_400(redis_url: str, calls: Counter[str]) -> None:
    with serving(redis_url, calls, require_key=["/orders"]) as http:
        first = http.post("/orders", json={"sku": 1}, headers={**KEY, **ALICE})
        again = http.post("/orders", json={"sku": 1}, headers={**KEY, **ALICE})
        reused = http.post("/orders", json={"sku": 2}, headers={**KEY, **ALICE})
        missing = http.post("/orders", json={"sku": 1}, headers=ALICE)
        malformed = http.post(
            "/orders", json={"sku": 1}, headers={"Idempotency-Key": '"x', **ALICE}
        )
        slow_key = {"Idempotency-Key": "s", **ALICE}
        answers: list[Any] = []
        slow = threading.Thread(
            target=lambda: answers.append(http.post("/orders", json={"slow": 1}, headers=slow_key))
        )
        slow.start()
        assert slow_started.wait(5)
        busy = http.post("/orders", json={"slow": 1}, headers=slow_key)
        slow.join(10)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert reused.status_code == 422 and missing.status_code == malformed.status_code == 400
    assert reused.headers["content-type"] == "application/problem+json"
    assert busy.status_code == 409 and int(busy.headers["retry-after"]) >= 1
    assert answers[0].status_code == 201
    assert calls["orders"] == 2


def test_two_users_with_one_key_get_two_executions(redis_url: str, calls: Counter[str]) -> None:
    with serving(redis_url, calls) as http:
        answers = [
            http.post("/orders", json={"sku": 1}, headers={**KEY, **user})
            for user in (ALICE, BOB, ALICE, BOB)
        ]
    alice, bob, alice_again, bob_again = answers
    assert calls["orders"] == 2  # the users share a display name, not a namespace
    assert alice.json()["user"] == 1 and bob.json()["user"] == 2
    assert alice_again.json() == alice.json() and bob_again.json() == bob.json()
    assert alice_again.headers["idempotent-replayed"] == bob_again.headers["idempotent-replayed"]


def test_unhandled_exceptions_release_and_http_exceptions_are_stored(
    redis_url: str, calls: Counter[str]
) -> None:
    events: list[Any] = []
    with serving(redis_url, calls, observer=events.append) as http:
        for _ in range(2):
            assert http.post("/boom", headers={**KEY, **ALICE}).status_code == 500
            refused = http.post("/refused", headers={"Idempotency-Key": "r", **ALICE})
    assert calls["boom"] == 2  # released: run again
    assert calls["refused"] == 1 and refused.headers["idempotent-replayed"] == "true"
    requests = [(e.route, e.outcome) for e in events if e.name == "idempotency.request"]
    assert requests == [
        ("/boom", "released"),
        ("/refused", "executed"),
        ("/boom", "released"),
        ("/refused", "replayed"),  # Litestar routes before its middleware runs
    ]
