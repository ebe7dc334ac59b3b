"""The retrying client against the middleware on a real redis-server."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis

from integrations.httpx_client import IdempotentTransport, RetryPolicy
from tests.idemkit.shop import Shop


class LoseFirstResponses(httpx.AsyncBaseTransport):
    """The server runs the request, then the response is lost on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lose: int) -> None:
        self.inner = inner
        self.lose = lose
        self.keys: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("idempotency-key", ""))
        response = await self.inner.handle_async_request(request)
        if self.lose > 0:
            self.lose -= 1
            await response.aread()
            raise httpx.ReadTimeout("response lost", request=request)
        return response


async def test_lost_responses_are_retried_with_the_same_key(aredis: aioredis.Redis) -> None:
    shop = Shop()
    flaky = LoseFirstResponses(httpx.ASGITransport(app=shop.app(store=aredis)), lose=2)
    transport = IdempotentTransport(flaky, RetryPolicy(backoff=0.001))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        response = await c.post("/payments", content=b"10 EUR")
    assert response.status_code == 201
    assert response.headers["idempotent-replayed"] == "true"
    assert shop.calls["pay"] == 1
    assert len(set(flaky.keys)) == 1 and len(flaky.keys) == 3


async def test_gives_up_after_the_bounded_attempts(aredis: aioredis.Redis) -> None:
    shop = Shop()
    flaky = LoseFirstResponses(httpx.ASGITransport(app=shop.app(store=aredis)), lose=10)
    transport = IdempotentTransport(flaky, RetryPolicy(attempts=3, backoff=0.001))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/payments", content=b"x")
    assert len(flaky.keys) == 3 and shop.calls["pay"] == 1


async def test_keeps_a_caller_supplied_key_and_ignores_get(aredis: aioredis.Redis) -> None:
    shop = Shop()
    inner = LoseFirstResponses(httpx.ASGITransport(app=shop.app(store=aredis)), lose=0)
    async with httpx.AsyncClient(transport=IdempotentTransport(inner), base_url="http://s") as c:
        await c.post("/payments", content=b"x", headers={"Idempotency-Key": "mine"})
        await c.get("/read")
    assert inner.keys == ["mine", ""]


def test_retry_policy_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
