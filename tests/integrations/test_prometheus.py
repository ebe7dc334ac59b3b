"""Prometheus metrics from real traffic: a service on uvicorn with the middleware, a fenced
lock and ``/metrics``; the scrape must agree with what the test sent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from idemkit import FencedLock, IdempotencyMiddleware
from idemkit.observe import Event
from integrations.prometheus import PrometheusObserver
from tests.integrations.servers import asgi_server

ORDERS = 6


def service(redis_url: str, registry: CollectorRegistry) -> tuple[Starlette, Any]:
    observer = PrometheusObserver(registry=registry)
    store = aioredis.Redis.from_url(redis_url)
    gate = asyncio.Event()

    async def order(request: Request) -> Response:
        if request.path_params["id"] == 99:  # the slow one, for a 409
            await asyncio.wait_for(gate.wait(), 5)
        async with FencedLock(store, "stock", lease_ms=2_000, observer=observer) as token:
            return JSONResponse({"id": request.path_params["id"], "token": token}, status_code=201)

    async def release(request: Request) -> Response:
        gate.set()
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/orders/{id:int}", order, methods=["POST"]),
            Route("/release", release, methods=["GET"]),
            Mount("/metrics", make_asgi_app(registry)),
        ],
        middleware=[Middleware(IdempotencyMiddleware, store=store, observer=observer)],
    )
    return app, store


@pytest.fixture
def served(redis_url: str) -> Iterator[tuple[str, CollectorRegistry]]:
    registry = CollectorRegistry()
    app, store = service(redis_url, registry)
    with asgi_server(app, on_shutdown=store.aclose) as url:
        yield url, registry


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics/", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_after_traffic_counts_what_was_sent(
    served: tuple[str, CollectorRegistry],
) -> None:
    url, _ = served
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        for i in range(ORDERS):
            key = {"Idempotency-Key": f"order-{i}"}
            assert (await http.post(f"/orders/{i}", json={"n": i}, headers=key)).status_code == 201
            replay = await http.post(f"/orders/{i}", json={"n": i}, headers=key)
            assert replay.headers["idempotent-replayed"] == "true"
        reused = await http.post("/orders/0", json={"n": 7}, headers={"Idempotency-Key": "order-0"})
        bad = await http.post("/orders/1", headers={"Idempotency-Key": '"unclosed'})
        slow = asyncio.create_task(http.post("/orders/99", headers={"Idempotency-Key": "slow"}))
        await asyncio.sleep(0.2)
        busy = await http.post("/orders/99", headers={"Idempotency-Key": "slow"})
        await http.get("/release")
        assert (await slow).status_code == 201
    assert (reused.status_code, bad.status_code, busy.status_code) == (422, 400, 409)

    metrics = scrape(url)

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    route = "/orders/{id}"
    assert value("idemkit_requests_total", route=route, outcome="executed") == ORDERS + 1
    # Replays and problems are answered before the router ran: no route template yet.
    assert value("idemkit_requests_total", route="", outcome="replayed") == ORDERS
    assert value("idemkit_requests_total", route="", outcome="mismatch") == 1
    assert value("idemkit_requests_total", route="", outcome="rejected") == 1
    assert value("idemkit_requests_total", route="", outcome="conflict") == 1
    # Claims: every keyed request that got past key parsing; completions: each execution.
    claims = ORDERS + ORDERS + 1 + 2
    assert value("idemkit_store_seconds_count", op="claim", outcome="ok") == claims
    assert value("idemkit_store_seconds_count", op="complete", outcome="ok") == ORDERS + 1
    assert value("idemkit_lock_wait_seconds_count", kind="lock", outcome="acquired") == ORDERS + 1
    assert value("idemkit_lock_hold_seconds_count", kind="lock", outcome="released") == ORDERS + 1
    assert value("idemkit_lock_lost_total", kind="lock") == 0


async def test_lock_losses_and_timeouts_are_counted(aredis: aioredis.Redis) -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry=registry)
    holder = FencedLock(aredis, "res", lease_ms=100, observer=observer)
    other = FencedLock(aredis, "res", lease_ms=100, observer=observer)
    await holder.acquire()
    with pytest.raises(Exception, match="not acquired"):
        await other.acquire(blocking=False)
    await asyncio.sleep(0.15)  # the lease runs out; another holder takes the name
    await other.acquire()
    with pytest.raises(Exception, match="lost"):
        await holder.release()
    await other.release()

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("idemkit_lock_wait_seconds_count", kind="lock", outcome="timeout") == 1
    assert value("idemkit_lock_wait_seconds_count", kind="lock", outcome="acquired") == 2
    assert value("idemkit_lock_lost_total", kind="lock") == 1
    assert value("idemkit_lock_hold_seconds_count", kind="lock", outcome="lost") == 1
    assert value("idemkit_lock_hold_seconds_count", kind="lock", outcome="released") == 1


def test_crdt_circuit_and_other_events_by_name() -> None:
    registry = CollectorRegistry()
    observer = PrometheusObserver(registry=registry)
    # As crdt/redis_store.py and crdt/sync.py emit them.
    merged = {"region": "eu", "object": "cart:42", "type": "ORSet"}
    observer(Event("crdt.merge", "changed", attrs=merged))
    observer(Event("crdt.merge", "changed", attrs=merged))
    observer(Event("crdt.sync", "ok", duration=0.2, attrs={"src": "eu", "dst": "us"}))
    observer(Event("crdt.sync", "unreachable", duration=1.5, attrs={"src": "us", "dst": "eu"}))
    observer(Event("circuit.state", "open", route="shop", attrs={"previous": "closed"}))
    observer(Event("saga.finished", "completed", route="order"))
    value = registry.get_sample_value
    assert value("idemkit_crdt_merges_total", {"type": "ORSet", "outcome": "changed"}) == 2
    pair = {"src": "us", "dst": "eu", "outcome": "unreachable"}
    assert value("idemkit_crdt_sync_rounds_total", pair) == 1
    ok = {"src": "eu", "dst": "us", "outcome": "ok"}
    assert value("idemkit_crdt_sync_seconds_sum", ok) == pytest.approx(0.2)
    assert value("idemkit_circuit_state", {"breaker": "shop", "state": "open"}) == 1
    assert value("idemkit_circuit_state", {"breaker": "shop", "state": "closed"}) == 0
    assert value("idemkit_events_total", {"event": "saga.finished", "outcome": "completed"}) == 1


def test_a_second_observer_on_one_registry_shares_the_metrics() -> None:
    registry = CollectorRegistry()
    first = PrometheusObserver(registry=registry)
    second = PrometheusObserver(registry=registry)  # no DuplicatedTimeseries
    first(Event("idempotency.request", "executed", route="/a"))
    second(Event("idempotency.request", "executed", route="/a"))
    labels = {"route": "/a", "outcome": "executed"}
    assert registry.get_sample_value("idemkit_requests_total", labels) == 2
    other = PrometheusObserver(registry=registry, namespace="shop")
    other(Event("idempotency.request", "executed", route="/a"))
    assert registry.get_sample_value("shop_requests_total", labels) == 1
