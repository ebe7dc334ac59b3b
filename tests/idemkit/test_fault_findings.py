"""Findings 1 to 8 of the faults issue, one focused test each, on real redis-server processes
(paused, killed, restarted, configured to evict). The full matrix of faults and client
setups is tests/idemkit/test_fault_matrix.py."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from idemkit import IdempotencyMiddleware
from idemkit.lease import Completion, LeaseStore
from idemkit.testing import RedisServer, free_port
from tests.idemkit.shop import MODES, Shop, client, post_scope

KEY = {"Idempotency-Key": "fault-1"}


@pytest.fixture(params=MODES)
def shop(request: pytest.FixtureRequest) -> Shop:
    return Shop(request.param)


def events_of(collected: list[Any]) -> list[str]:
    return [e.outcome for e in collected if e.name == "idempotency.request"]


# -- finding 1: a bounded answer during outages -------------------------------------------


@pytest.mark.parametrize("fault", ["paused", "refused"])
async def test_finding1_redis_py_defaults_get_a_503_within_store_timeout(
    fresh_redis_server: RedisServer, fault: str
) -> None:
    url = fresh_redis_server.url if fault == "paused" else f"redis://127.0.0.1:{free_port()}"
    store = aioredis.Redis.from_url(url)  # redis-py's defaults: no timeout, its own Retry
    shop = Shop()
    async with client(shop.app(store=store, store_timeout=0.5)) as c:
        if fault == "paused":
            await c.post("/payments", content=b"w", headers={"Idempotency-Key": "warm"})
            fresh_redis_server.pause()
        try:
            started = time.monotonic()
            response = await c.post("/payments", content=b"x", headers=KEY)
            elapsed = time.monotonic() - started
        finally:
            fresh_redis_server.resume()
    assert response.status_code == 503
    assert elapsed < 0.5 + 0.4, elapsed
    await store.aclose()


# -- finding 2: completions that survive a stall -------------------------------------------


async def test_finding2_a_completion_stalled_past_store_timeout_is_retried_within_the_lease(
    fresh_redis_server: RedisServer,
) -> None:
    store = aioredis.Redis.from_url(fresh_redis_server.url, socket_timeout=1.0)
    shop = Shop()
    shop.gate = asyncio.Event()
    collected: list[Any] = []
    app = shop.app(store=store, store_timeout=0.3, lease=6.0, observer=collected.append)
    async with client(app) as c:
        first = asyncio.create_task(c.post("/payments", content=b"x", headers=KEY))
        await shop.entered.wait()
        fresh_redis_server.pause()  # the completion meets a stalled Redis
        shop.gate.set()
        assert (await first).status_code == 201
        await asyncio.sleep(1.5)  # longer than socket_timeout and store_timeout together
        fresh_redis_server.resume()
        await asyncio.sleep(1.5)  # the background retry stores it
        retry = await c.post("/payments", content=b"x", headers=KEY)
    assert retry.headers["idempotent-replayed"] == "true"
    assert shop.calls["pay"] == 1
    # Per request and per completion (the engine's per-operation store events aside).
    assert [(e.name, e.outcome) for e in collected if e.name != "idempotency.store"] == [
        ("idempotency.request", "store_failed"),
        ("idempotency.completion", "executed"),
        ("idempotency.request", "replayed"),
    ]
    await store.aclose()


# -- finding 3: eviction ---------------------------------------------------------------------


async def test_finding3_an_evicting_redis_is_refused_by_default() -> None:
    with RedisServer(extra_args=["--maxmemory-policy", "allkeys-lru"]) as server:
        store = aioredis.Redis.from_url(server.url)
        shop = Shop()
        async with client(shop.app(store=store)) as c:
            refused = await c.post("/payments", content=b"x", headers=KEY)
        assert refused.status_code == 503
        assert refused.json()["type"] == "urn:idemkit:problem:store-evicts"
        assert "allkeys-lru" in refused.json()["detail"]
        assert shop.calls["pay"] == 0
        await store.aclose()


async def test_finding3_warn_serves_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="idemkit")
    with RedisServer(extra_args=["--maxmemory-policy", "volatile-lru"]) as server:
        store = aioredis.Redis.from_url(server.url)
        shop = Shop()
        async with client(shop.app(store=store, evicting_store="warn")) as c:
            for n in range(3):
                ok = await c.post("/payments", content=b"x", headers={"Idempotency-Key": f"k{n}"})
                assert ok.status_code == 201
        lines = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
        assert len(lines) == 1 and "volatile-lru" in lines[0].getMessage()
        await store.aclose()


# -- finding 4: lost versus fenced ----------------------------------------------------------


async def test_finding4_a_lost_record_and_a_newer_token_are_told_apart(
    aredis: aioredis.Redis,
) -> None:
    store = LeaseStore(aredis)
    lost, fenced = store.record_key("lost"), store.record_key("fenced")
    claim = await store.claim(lost, b"f", 10_000, 60_000)
    await aredis.delete(lost)  # what a restart without AOF leaves
    assert await store.complete(lost, claim.token, b"r", 60_000) is Completion.LOST
    zombie = await store.claim(fenced, b"f", 50, 60_000)
    await asyncio.sleep(0.08)
    newer = await store.claim(fenced, b"f", 10_000, 60_000)
    assert await store.complete(fenced, zombie.token, b"old", 60_000) is Completion.FENCED
    assert await store.complete(fenced, newer.token, b"new", 60_000) is Completion.STORED
    assert await store.complete(fenced, newer.token, b"new", 60_000) is Completion.STORED


async def test_finding4_redis_restarted_without_aof_mid_request_reports_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="idemkit")
    with RedisServer(appendonly=False) as server:
        store = aioredis.Redis.from_url(server.url, socket_timeout=1.0)
        shop = Shop()
        shop.gate = asyncio.Event()
        collected: list[Any] = []
        async with client(shop.app(store=store, observer=collected.append)) as c:
            first = asyncio.create_task(c.post("/payments", content=b"x", headers=KEY))
            await shop.entered.wait()
            await asyncio.to_thread(server.restart)  # SIGTERM, no AOF: the record is gone
            shop.gate.set()
            assert (await first).status_code == 201
        assert events_of(collected) == ["lost"]
        assert any("record is gone" in r.getMessage() for r in caplog.records)
        await store.aclose()


# -- finding 5: pathsend and zerocopysend -----------------------------------------------------


def _file_app(store: Any, path: str) -> Starlette:
    calls = Counter[str]()

    async def download(request: Request) -> Response:
        calls["file"] += 1
        return FileResponse(path, media_type="text/plain")

    app = Starlette(
        routes=[Route("/file", download, methods=["POST"])],
        middleware=[Middleware(IdempotencyMiddleware, store=store)],
    )
    app.state.calls = calls
    return app


async def _drive(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_finding5_a_file_sent_with_pathsend_is_stored(
    aredis: aioredis.Redis, tmp_path: Any
) -> None:
    path = tmp_path / "receipt.txt"
    path.write_bytes(b"receipt 42\n")
    app = _file_app(aredis, str(path))
    scope = post_scope("/file", [(b"idempotency-key", b"file-1")])
    scope["extensions"] = {"http.response.pathsend": {}}
    first = await _drive(app, dict(scope))
    assert [m["type"] for m in first] == ["http.response.start", "http.response.pathsend"]
    path.write_bytes(b"changed\n")  # the replay serves what was sent, not the file now
    replay = await _drive(app, dict(scope))
    assert replay[-1]["body"] == b"receipt 42\n"
    assert (b"idempotent-replayed", b"true") in replay[0]["headers"]
    assert app.state.calls["file"] == 1


async def test_finding5_a_body_sent_with_zerocopysend_is_stored(
    aredis: aioredis.Redis, tmp_path: Any
) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"0123456789")
    calls = Counter[str]()

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        calls["raw"] += 1
        await send({"type": "http.response.start", "status": 201, "headers": []})
        fd = os.open(path, os.O_RDONLY)
        try:
            await send(
                {
                    "type": "http.response.zerocopysend",
                    "file": fd,
                    "offset": 2,
                    "count": 3,
                    "more_body": True,
                }
            )
            await send({"type": "http.response.zerocopysend", "file": fd, "offset": 7})
        finally:
            os.close(fd)

    app = IdempotencyMiddleware(raw, store=aredis)
    scope = post_scope("/raw", [(b"idempotency-key", b"zc-1")])
    await _drive(app, dict(scope))
    replay = await _drive(app, dict(scope))
    assert replay[-1]["body"] == b"234789" and calls["raw"] == 1


# -- finding 6: a 5xx with a background task is sent at once ---------------------------------


async def test_finding6_a_returned_5xx_reaches_the_client_before_its_background_task(
    aredis: aioredis.Redis,
) -> None:
    async def failing(request: Request) -> Response:
        return JSONResponse(
            {"error": "upstream"}, 502, background=BackgroundTask(asyncio.sleep, 0.6)
        )

    app = Starlette(
        routes=[Route("/f", failing, methods=["POST"])],
        middleware=[Middleware(IdempotencyMiddleware, store=aredis)],
    )
    sent_at: list[float] = []
    started = time.monotonic()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            sent_at.append(time.monotonic() - started)

    await app(post_scope("/f", [(b"idempotency-key", b"5xx")]), receive, send)
    assert sent_at[0] < 0.3, sent_at  # before the 0.6 s background task, not after it
    async with client(app) as c:
        replay = await c.post("/f", headers={"Idempotency-Key": "5xx"})
    assert replay.status_code == 502 and replay.headers["idempotent-replayed"] == "true"


# -- finding 7: no Content-Length on replayed 204 and 304 ------------------------------------


async def test_finding7_a_replayed_204_has_no_content_length(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/nothing", headers=KEY)
        replay = await c.post("/nothing", headers=KEY)
    assert first.status_code == replay.status_code == 204
    assert replay.headers["idempotent-replayed"] == "true"
    assert "content-length" not in replay.headers
    assert shop.calls["nothing"] == 1


# -- finding 8: one log line per interval during an outage ----------------------------------


async def test_finding8_an_outage_logs_one_line_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="idemkit")
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    shop = Shop()
    async with client(shop.app(store=dead, store_timeout=0.3)) as c:
        for n in range(20):
            await c.post("/payments", content=b"x", headers={"Idempotency-Key": f"k{n}"})
    lines = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].idemkit == "unavailable"  # type: ignore[attr-defined]
    await dead.aclose()
