"""The retrying clients against the demo shop on uvicorn, through a network that loses answers.

The proxy forwards each request, lets the shop do its work, and then drops the answer (20%),
or answers 503 itself without reaching the shop (10%). Every order must still be created,
and its handler must have run exactly once: the shop's ledger counts the runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn

from idemkit.testing import LossyProxy, free_port
from integrations.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError
from integrations.httpx_client import IdempotentTransport, SyncIdempotentTransport
from integrations.requests_client import idempotent_session
from integrations.retry import RetryPolicy
from loadtests.service import create_app, read_ledger

ORDERS = 200
WORKERS = 12
POLICY = RetryPolicy(attempts=12, backoff=0.02, max_backoff=0.25, deadline=20.0)


@pytest.fixture
def shop_port(redis_url: str) -> Iterator[int]:
    """The shop (``loadtests.service.create_app``) on uvicorn in a thread, on a free port."""
    port = free_port()
    servers: list[uvicorn.Server] = []

    async def serve() -> None:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        config = uvicorn.Config(
            create_app(client, lease=2.0),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
        servers.append(uvicorn.Server(config))
        try:
            await servers[0].serve()
        finally:
            await client.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (servers and servers[0].started):
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the shop did not start")
        time.sleep(0.02)
    yield port
    servers[0].should_exit = True
    thread.join(15)


def order(i: int, run: str) -> dict[str, Any]:
    return {"order_id": f"{run}-{i}", "product": f"sku-{1 + i % 5}", "qty": 1}


async def check_ledger(aredis: aioredis.Redis, run: str, proxy: LossyProxy) -> None:
    ledger = await read_ledger(aredis)
    ids = {f"{run}-{i}" for i in range(ORDERS)}
    runs = {k: v for k, v in ledger["order_runs"].items() if k in ids}
    assert set(runs) == ids, "an order never reached the shop"
    twice = {k: v for k, v in runs.items() if v != 1}
    assert not twice, f"handlers that ran more than once: {twice}"
    assert ids <= set(ledger["orders"])
    assert sum(p["sold"] for p in ledger["inventory"].values()) == ORDERS
    # The faults really happened, answers were lost after the shop had worked.
    assert proxy.stats.dropped >= ORDERS * 0.1 and proxy.stats.injected >= ORDERS * 0.04


def lossy(shop_port: int, seed: int) -> LossyProxy:
    return LossyProxy(shop_port, drop_rate=0.2, inject_rate=0.1, seed=seed)


async def test_httpx_client_creates_every_order_exactly_once(
    shop_port: int, aredis: aioredis.Redis
) -> None:
    with lossy(shop_port, seed=11) as proxy:
        transport = IdempotentTransport(policy=POLICY)
        url = f"http://127.0.0.1:{proxy.port}"
        async with httpx.AsyncClient(transport=transport, base_url=url, timeout=10) as client:
            queue = list(range(ORDERS))
            statuses: list[int] = []

            async def worker() -> None:
                while queue:
                    response = await client.post("/orders", json=order(queue.pop(), "hx"))
                    statuses.append(response.status_code)

            async with asyncio.timeout(60):
                await asyncio.gather(*(worker() for _ in range(WORKERS)))
    assert statuses == [201] * ORDERS
    await check_ledger(aredis, "hx", proxy)


async def test_requests_client_creates_every_order_exactly_once(
    shop_port: int, aredis: aioredis.Redis
) -> None:
    local = threading.local()

    def place(i: int) -> int:
        if not hasattr(local, "session"):
            local.session = idempotent_session(POLICY)
        url = f"http://127.0.0.1:{proxy.port}/orders"
        return int(local.session.post(url, json=order(i, "rq"), timeout=10).status_code)

    with lossy(shop_port, seed=12) as proxy, ThreadPoolExecutor(WORKERS) as pool:
        statuses = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(
                None, lambda: list(pool.map(place, range(ORDERS)))
            ),
            60,
        )
    assert statuses == [201] * ORDERS
    await check_ledger(aredis, "rq", proxy)


@pytest.mark.parametrize("kind", ["httpx", "requests"])
def test_the_breaker_spares_a_failing_shop_and_closes_when_it_recovers(
    shop_port: int, kind: str
) -> None:
    breaker = CircuitBreaker(failure_threshold=4, cooldown=0.5, name="shop")
    http = httpx.Client(transport=SyncIdempotentTransport(policy=POLICY, breaker=breaker))
    session = idempotent_session(POLICY, breaker=breaker)

    def post(i: int) -> int:
        body = order(i, f"cb-{kind}")
        if kind == "httpx":
            return http.post(url + "/orders", json=body, timeout=10).status_code
        return int(session.post(url + "/orders", json=body, timeout=10).status_code)

    with LossyProxy(shop_port, inject_rate=1.0) as proxy:  # the shop is "down": all 503
        url = f"http://127.0.0.1:{proxy.port}"
        assert post(0) == 503  # four attempts, then the circuit opens and the retries stop
        assert proxy.stats.exchanges == 4 and breaker.state is BreakerState.OPEN
        for i in range(1, 20):
            with pytest.raises(CircuitOpenError):
                post(i)
        assert proxy.stats.exchanges == 4  # nothing reached the network while open
        proxy.inject_rate = 0.0  # the shop is back
        time.sleep(0.55)
        assert post(20) == 201  # the half-open trial goes through and closes the circuit
        assert breaker.state is BreakerState.CLOSED
        assert [post(i) for i in range(21, 25)] == [201] * 4
    http.close()
    session.close()
