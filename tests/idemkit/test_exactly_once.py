"""Exactly once, against a real redis-server: concurrent duplicates and a paused zombie."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from idemkit.middleware import IdempotencyMiddleware
from tests.idemkit.shop import Shop, client

KEY = {"Idempotency-Key": "once"}


async def test_fifty_concurrent_duplicates_run_the_handler_once(aredis: aioredis.Redis) -> None:
    shop = Shop()
    shop.delay = 0.05
    async with client(shop.app(store=aredis)) as c:
        responses = await asyncio.gather(
            *(c.post("/payments", content=b"10 EUR", headers=KEY) for _ in range(50))
        )
        after = await c.post("/payments", content=b"10 EUR", headers=KEY)
    assert shop.calls["pay"] == 1
    winners = [r for r in responses if r.status_code == 201]
    assert {r.status_code for r in responses} <= {201, 409}
    assert all(r.content == winners[0].content for r in winners)
    assert after.status_code == 201 and after.content == winners[0].content


def test_fifty_duplicates_from_five_event_loops_run_once(redis_url: str) -> None:
    """Five threads, each its own loop, client and middleware instance: like five workers."""
    shop = Shop()
    shop.delay = 0.02
    results: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    start = threading.Barrier(5)

    def worker() -> None:
        async def run() -> None:
            redis_client = aioredis.Redis.from_url(redis_url)
            async with client(shop.app(store=redis_client)) as c:
                start.wait()
                for response in await asyncio.gather(
                    *(
                        c.post("/payments", content=b"x", headers={"Idempotency-Key": "5x10"})
                        for _ in range(10)
                    )
                ):
                    with lock:
                        results.append((response.status_code, response.content))
            await redis_client.aclose()

        asyncio.run(run())

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 50
    assert shop.calls["pay"] == 1
    assert {status for status, _ in results} <= {201, 409}
    assert len({body for status, body in results if status == 201}) == 1


def test_zombie_that_outlived_its_lease_cannot_overwrite(redis_url: str) -> None:
    """Worker A is paused (its event loop blocked, as in a GC or SIGSTOP pause) past its lease;
    worker B claims the key again and completes. When A wakes, its write is fenced out."""
    executions = Counter[str]()
    a_started = threading.Event()

    def make_app(worker: str, redis_client: aioredis.Redis) -> Starlette:
        async def pay(request: Request) -> Response:
            executions[worker] += 1
            if worker == "A":
                a_started.set()
                # Blocks the loop, so no renewal can run: like a stopped process.
                time.sleep(0.6)  # noqa: ASYNC251
            return JSONResponse({"paid_by": worker}, status_code=201)

        return Starlette(
            routes=[Route("/pay", pay, methods=["POST"])],
            middleware=[Middleware(IdempotencyMiddleware, store=redis_client, lease=0.2)],
        )

    zombie_response: list[Any] = []

    def run_a() -> None:
        async def go() -> None:
            redis_client = aioredis.Redis.from_url(redis_url)
            async with client(make_app("A", redis_client)) as c:
                zombie_response.append(await c.post("/pay", content=b"x", headers=KEY))
            await redis_client.aclose()

        asyncio.run(go())

    thread = threading.Thread(target=run_a)
    thread.start()
    assert a_started.wait(5)

    async def run_b() -> list[Any]:
        redis_client = aioredis.Redis.from_url(redis_url)
        async with client(make_app("B", redis_client)) as c:
            await asyncio.sleep(0.3)  # A's lease (0.2 s) has expired, A is still paused
            b = await c.post("/pay", content=b"x", headers=KEY)
            await asyncio.to_thread(thread.join, 5)
            after = await c.post("/pay", content=b"x", headers=KEY)
        await redis_client.aclose()
        return [b, after]

    b, after = asyncio.run(run_b())
    assert b.status_code == 201 and b.json() == {"paid_by": "B"}
    assert zombie_response[0].json() == {"paid_by": "A"}  # A's own client still got an answer
    assert after.json() == {"paid_by": "B"} and after.headers["idempotent-replayed"] == "true"
    assert executions == {"A": 1, "B": 1}
