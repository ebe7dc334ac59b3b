"""The retrying client against the middleware on a real redis-server."""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

import httpx
import pytest
import redis.asyncio as aioredis

from integrations.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
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


async def test_async_transport_honours_an_http_date_and_the_breaker() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        if len(seen) == 1:
            return httpx.Response(
                503, headers={"retry-after": formatdate(time.time() + 1.2, usegmt=True)}
            )
        return httpx.Response(502)

    breaker = CircuitBreaker(failure_threshold=2, cooldown=60)
    transport = IdempotentTransport(httpx.MockTransport(answer), RetryPolicy(), breaker=breaker)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
        started = time.monotonic()
        response = await c.post("/orders", content=b"x")
        waited = time.monotonic() - started
        assert response.status_code == 502 and len(seen) == 2 and len(set(seen)) == 1
        assert 0.2 < waited < 1.5  # the date (whole seconds) was honoured, not ignored
        assert breaker.state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError):
            await c.post("/orders", content=b"y")
    assert len(seen) == 2


async def test_a_cancelled_trial_call_frees_the_half_open_slot() -> None:
    gate = asyncio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(200)

    breaker = CircuitBreaker(failure_threshold=1, cooldown=0.01)
    breaker.before_call()
    breaker.record_failure()
    await asyncio.sleep(0.02)
    transport = IdempotentTransport(httpx.MockTransport(slow), breaker=breaker)
    async with httpx.AsyncClient(transport=transport, base_url="http://s") as c:
        trial = asyncio.create_task(c.post("/o", content=b"x"))
        await asyncio.sleep(0.01)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        gate.set()
        assert (await c.post("/o", content=b"x")).status_code == 200
    assert breaker.state is BreakerState.CLOSED
