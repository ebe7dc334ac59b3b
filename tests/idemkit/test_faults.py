"""Redis dies mid-request: every answer is correct, a replay, 409 or 503; never a 500, and a
completed key never runs twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from idemkit.testing import RedisServer
from tests.idemkit.shop import Shop, client


def fragile_client(server: RedisServer) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        server.url, socket_timeout=1.0, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 1)
    )


async def test_redis_killed_mid_request_and_restarted(fresh_redis_server: RedisServer) -> None:
    shop = Shop()
    shop.delay = 0.3
    redis_client = fragile_client(fresh_redis_server)
    statuses: Counter[int] = Counter()
    keys = [f"k{i}" for i in range(10)]

    async with client(shop.app(store=redis_client, lease=1.0)) as c:

        async def post(key: str) -> int:
            response = await c.post(
                "/payments", content=key.encode(), headers={"Idempotency-Key": key}
            )
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json"
            statuses[response.status_code] += 1
            return response.status_code

        in_flight = [asyncio.create_task(post(k)) for k in keys]
        await asyncio.sleep(0.1)  # all ten handlers are running
        await asyncio.to_thread(fresh_redis_server.kill)
        during = await asyncio.gather(*(post(f"down{i}") for i in range(5)))
        await asyncio.gather(*in_flight)
        await asyncio.to_thread(fresh_redis_server.restart)
        retries = await asyncio.gather(*(post(k) for k in keys))

    checker = aioredis.Redis.from_url(fresh_redis_server.url)
    completed = 0
    for key in keys:
        from idemkit.fingerprint import record_name
        from idemkit.lease import LeaseStore

        record = LeaseStore(checker).record_key(record_name("anonymous", key))
        if await checker.hget(record, "s") == b"d":
            completed += 1
    await checker.aclose()
    await redis_client.aclose()

    assert set(during) == {503}
    assert 500 not in statuses
    assert set(statuses) <= {201, 409, 503}
    assert set(retries) <= {201, 409}
    # Every handler ran at most twice: once before the crash and, only where the crash lost
    # the completion and the lease had run out, once more for the retry.
    assert shop.calls["pay"] <= 10 + (10 - completed)
    await redis_client.aclose()


async def test_completed_keys_survive_a_restart_and_replay(fresh_redis_server: RedisServer) -> None:
    shop = Shop()
    redis_client = fragile_client(fresh_redis_server)
    async with client(shop.app(store=redis_client)) as c:
        first = [
            await c.post("/payments", content=b"x", headers={"Idempotency-Key": f"r{i}"})
            for i in range(5)
        ]
        await asyncio.to_thread(fresh_redis_server.restart, kill=True)
        again = [
            await c.post("/payments", content=b"x", headers={"Idempotency-Key": f"r{i}"})
            for i in range(5)
        ]
    await redis_client.aclose()
    assert shop.calls["pay"] == 5
    assert [r.content for r in again] == [r.content for r in first]
    assert all(r.headers["idempotent-replayed"] == "true" for r in again)


async def test_paused_redis_gives_503_not_500(fresh_redis_server: RedisServer) -> None:
    shop = Shop()
    redis_client = fragile_client(fresh_redis_server)
    async with client(shop.app(store=redis_client)) as c:
        await asyncio.to_thread(fresh_redis_server.pause)
        try:
            response = await c.post("/payments", content=b"x", headers=KEY_HEADERS)
        finally:
            await asyncio.to_thread(fresh_redis_server.resume)
        after = await c.post("/payments", content=b"x", headers=KEY_HEADERS)
    await redis_client.aclose()
    assert response.status_code == 503 and int(response.headers["retry-after"]) >= 1
    assert after.status_code == 201
    assert shop.calls["pay"] == 1


KEY_HEADERS = {"Idempotency-Key": "paused"}
