"""HTTP semantics of idempotency, run against the middleware and against ``@idempotent`` on
Starlette, FastAPI and Litestar handlers (tests/idemkit/shop.py builds the same shop each
way): one capture and replay path, one set of expected results."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.idemkit.shop import MODES, Shop, client, post_scope

# Every test here runs on single Redis, Cluster and Sentinel (see tests/conftest.py).
pytestmark = pytest.mark.topologies

KEY = {"Idempotency-Key": "8e03978e-40d5-43e8-bc93-6894a57f9324"}


@pytest.fixture(params=MODES)
def shop(request: pytest.FixtureRequest) -> Shop:
    return Shop(request.param)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc: dict[str, Any] = response.json()
    assert doc["status"] == status and doc["detail"] and doc["type"].startswith("urn:idemkit:")
    return doc


async def test_first_request_executes_and_retry_replays(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/payments", content=b"10 EUR", headers=KEY)
        second = await c.post("/payments", content=b"10 EUR", headers=KEY)
    assert shop.calls["pay"] == 1
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == "/payments/1"
    assert second.headers["content-type"] == "application/json"


async def test_set_cookie_is_not_replayed(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/payments", content=b"x", headers=KEY)
        second = await c.post("/payments", content=b"x", headers=KEY)
    assert "set-cookie" in first.headers
    assert "set-cookie" not in second.headers


async def test_other_methods_pass_through(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        for _ in range(2):
            assert (await c.get("/read", headers=KEY)).status_code == 200
    assert shop.calls["read"] == 2


async def test_patch_is_covered_by_default(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        await c.patch("/payments", content=b"x", headers=KEY)
        replay = await c.patch("/payments", content=b"x", headers=KEY)
    assert shop.calls["pay"] == 1 and replay.headers["idempotent-replayed"] == "true"


async def test_methods_are_configurable(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis, methods=["POST"])) as c:
        await c.patch("/payments", content=b"x", headers=KEY)
        await c.patch("/payments", content=b"x", headers=KEY)
    assert shop.calls["pay"] == 2


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty"),
        ('""', "empty"),
        ("a" * 256, "at most 255"),
        ('"abc', "closing quote"),
        ('"abc";p=1', "after its closing quote"),
        ('"a b"', "0x20"),
        ("caf\u00e9", "0xe9"),
        ('"a\\x"', "escape"),
    ],
)
async def test_invalid_keys_get_400(
    shop: Shop, aredis: aioredis.Redis, value: str, fragment: str
) -> None:
    async with client(shop.app(store=aredis)) as c:
        response = await c.post(
            "/payments", content=b"x", headers=[("Idempotency-Key", value.encode("latin-1"))]
        )
    assert fragment in problem(response, 400)["detail"]
    assert shop.calls["pay"] == 0


async def test_two_key_headers_get_400(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        response = await c.post(
            "/payments", content=b"x", headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
        )
    assert "more than one" in problem(response, 400)["detail"]


async def test_sf_string_and_bare_token_are_the_same_key(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis)) as c:
        await c.post("/payments", content=b"x", headers={"Idempotency-Key": '"k-1"'})
        replay = await c.post("/payments", content=b"x", headers={"Idempotency-Key": "k-1"})
        await c.post("/payments", content=b"x", headers={"Idempotency-Key": '"a\\"b"'})
        replay2 = await c.post("/payments", content=b"x", headers={"Idempotency-Key": 'a"b'})
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay2.headers["idempotent-replayed"] == "true"
    assert shop.calls["pay"] == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [("/payments", b"20 EUR"), ("/payments?currency=usd", b"10 EUR"), ("/read", b"10 EUR")],
)
async def test_same_key_different_request_gets_422(
    shop: Shop, aredis: aioredis.Redis, path: str, body: bytes
) -> None:
    async with client(shop.app(store=aredis)) as c:
        await c.post("/payments", content=b"10 EUR", headers=KEY)
        problem(await c.post(path, content=body, headers=KEY), 422)
    assert shop.calls["pay"] == 1 and shop.calls["read"] == 0


async def test_headers_do_not_change_the_fingerprint_unless_configured(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis)) as c:
        await c.post("/payments", content=b"x", headers={**KEY, "X-Attempt": "1"})
        replay = await c.post("/payments", content=b"x", headers={**KEY, "X-Attempt": "2"})
    assert replay.headers["idempotent-replayed"] == "true"
    shop2 = Shop()
    async with client(shop2.app(store=aredis, fingerprint_headers=["X-Currency"])) as c:
        key = {"Idempotency-Key": "other"}
        await c.post("/payments", content=b"x", headers={**key, "X-Currency": "EUR"})
        problem(await c.post("/payments", content=b"x", headers={**key, "X-Currency": "USD"}), 422)


async def test_concurrent_duplicate_gets_409_with_retry_after(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    shop.gate = asyncio.Event()
    async with client(shop.app(store=aredis)) as c:
        first = asyncio.create_task(c.post("/payments", content=b"x", headers=KEY))
        await shop.entered.wait()
        second = await c.post("/payments", content=b"x", headers=KEY)
        shop.gate.set()
        assert (await first).status_code == 201
    problem(second, 409)
    assert int(second.headers["retry-after"]) >= 1
    assert shop.calls["pay"] == 1


async def test_mismatch_wins_over_in_flight(shop: Shop, aredis: aioredis.Redis) -> None:
    shop.gate = asyncio.Event()
    async with client(shop.app(store=aredis)) as c:
        first = asyncio.create_task(c.post("/payments", content=b"x", headers=KEY))
        await shop.entered.wait()
        problem(await c.post("/payments", content=b"y", headers=KEY), 422)
        shop.gate.set()
        await first


async def test_wait_mode_replays_the_first_response(shop: Shop, aredis: aioredis.Redis) -> None:
    shop.delay = 0.2
    async with client(shop.app(store=aredis, wait=5.0)) as c:
        first, second = await asyncio.gather(
            c.post("/payments", content=b"x", headers=KEY),
            c.post("/payments", content=b"x", headers=KEY),
        )
    assert shop.calls["pay"] == 1
    assert {first.status_code, second.status_code} == {201}
    assert first.content == second.content


async def test_wait_mode_gives_409_after_its_deadline(shop: Shop, aredis: aioredis.Redis) -> None:
    shop.gate = asyncio.Event()
    async with client(shop.app(store=aredis, wait=0.1)) as c:
        first = asyncio.create_task(c.post("/payments", content=b"x", headers=KEY))
        await shop.entered.wait()
        problem(await c.post("/payments", content=b"x", headers=KEY), 409)
        shop.gate.set()
        await first


async def test_callers_are_isolated(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        alice = {**KEY, "Authorization": "Bearer alice"}
        bob = {**KEY, "Authorization": "Bearer bob"}
        a1 = await c.post("/payments", content=b"x", headers=alice)
        b1 = await c.post("/payments", content=b"x", headers=bob)
        a2 = await c.post("/payments", content=b"x", headers=alice)
        b2 = await c.post("/payments", content=b"x", headers=bob)
    assert shop.calls["pay"] == 2
    assert a1.json()["charge"] != b1.json()["charge"]
    assert a2.content == a1.content and b2.content == b1.content


async def test_returned_500_is_stored_and_replayed(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/status/500", headers=KEY)
        second = await c.post("/status/500", headers=KEY)
    assert first.status_code == second.status_code == 500
    assert second.headers["idempotent-replayed"] == "true"
    assert shop.calls["status"] == 1


@pytest.mark.parametrize("code", [408, 429, 503])
async def test_transient_statuses_release_the_key(
    shop: Shop, aredis: aioredis.Redis, code: int
) -> None:
    async with client(shop.app(store=aredis)) as c:
        await c.post(f"/status/{code}", headers=KEY)
        second = await c.post(f"/status/{code}", headers=KEY)
    assert "idempotent-replayed" not in second.headers
    assert shop.calls["status"] == 2


async def test_release_statuses_are_configurable(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis, release_statuses=[500])) as c:
        await c.post("/status/503", headers=KEY)
        await c.post("/status/503", headers=KEY)
        await c.post("/status/500", headers={"Idempotency-Key": "k2"})
        await c.post("/status/500", headers={"Idempotency-Key": "k2"})
    assert shop.calls["status"] == 3


async def test_unhandled_exception_releases_the_key(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/boom", headers=KEY)
        second = await c.post("/boom", headers=KEY)
    assert first.status_code == second.status_code == 500
    assert "idempotent-replayed" not in second.headers
    assert shop.calls["boom"] == 2


async def test_cancelled_request_releases_the_key(shop: Shop, aredis: aioredis.Redis) -> None:
    shop.gate = asyncio.Event()
    app = shop.app(store=aredis)
    scope = post_scope("/payments", [(b"idempotency-key", b"cancel-me")])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message: Any) -> None:
        pass

    task = asyncio.create_task(app(scope, receive, send))
    await shop.entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    shop.gate.set()
    async with client(app) as c:
        retry = await c.post("/payments", content=b"x", headers={"Idempotency-Key": "cancel-me"})
    assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers
    assert shop.calls["pay"] == 2


async def test_request_body_over_the_cap_gets_413(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis, max_body_bytes=10)) as c:
        problem(await c.post("/payments", content=b"x" * 11, headers=KEY), 413)
        assert (await c.post("/payments", content=b"x" * 10, headers=KEY)).status_code == 201


async def test_oversized_response_is_stored_without_body(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis, max_response_bytes=1000)) as c:
        first = await c.post("/big", headers=KEY)
        second = await c.post("/big", headers=KEY)
    assert len(first.content) == 5000
    assert second.status_code == 201 and second.content == b""
    assert second.headers["idempotent-body-omitted"] == "true"
    assert second.headers["idempotent-replayed"] == "true"
    assert shop.calls["big"] == 1


async def test_streaming_response_within_the_cap_is_replayed(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/stream", headers=KEY)
        second = await c.post("/stream", headers=KEY)
    assert first.content == second.content == b"chunk0;chunk1;chunk2;"
    assert second.headers["idempotent-replayed"] == "true"
    assert shop.calls["stream"] == 1


async def test_lease_is_renewed_while_a_long_handler_runs(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    shop.delay = 0.6
    # store_timeout well above the lease: this is about renewal, not a slow store (a loaded
    # machine with a Cluster's first connections can take a second).
    async with client(shop.app(store=aredis, lease=0.2, store_timeout=5.0)) as c:
        first = asyncio.create_task(c.post("/payments", content=b"x", headers=KEY))
        await asyncio.sleep(0.45)  # more than two leases: only renewal keeps the key busy
        problem(await c.post("/payments", content=b"x", headers=KEY), 409)
        assert (await first).status_code == 201
    assert shop.calls["pay"] == 1


async def test_record_expires_after_ttl(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis, ttl=0.2, lease=0.1)) as c:
        await c.post("/payments", content=b"x", headers=KEY)
        await asyncio.sleep(0.3)
        again = await c.post("/payments", content=b"x", headers=KEY)
    assert "idempotent-replayed" not in again.headers
    assert shop.calls["pay"] == 2


async def test_records_use_one_hash_tag_and_no_raw_key(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        await c.post("/payments", content=b"x", headers=KEY)
    keys = [k.decode() for k in await aredis.keys("*")]
    assert len(keys) == 1 and keys[0].startswith("idemkit:{") and keys[0].endswith("}")
    assert KEY["Idempotency-Key"] not in keys[0]


async def test_unreachable_redis_fails_closed_with_503(shop: Shop) -> None:
    from idemkit.testing import free_port

    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    async with client(shop.app(store=dead)) as c:
        response = await c.post("/payments", content=b"x", headers=KEY)
        plain = await c.post("/payments", content=b"x")
    problem(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert plain.status_code == 201  # requests without a key never need the store
    assert shop.calls["pay"] == 1
    await dead.aclose()


async def test_fail_open_serves_without_idempotency(shop: Shop) -> None:
    from idemkit.testing import free_port

    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    events: list[Any] = []
    async with client(
        shop.app(
            store=dead,
            fail_open=True,
            observer=lambda e: e.name == "idempotency.request" and events.append(e.outcome),
        )
    ) as c:
        response = await c.post("/payments", content=b"abc", headers=KEY)
    assert response.status_code == 201 and response.json()["echo"] == "abc"
    assert events == ["bypassed"]
    await dead.aclose()


async def test_observer_sees_each_outcome(shop: Shop, aredis: aioredis.Redis) -> None:
    events: list[Any] = []
    async with client(
        shop.app(
            store=aredis,
            observer=lambda e: e.name == "idempotency.request" and events.append(e.outcome),
        )
    ) as c:
        await c.post("/payments", content=b"x", headers=KEY)
        await c.post("/payments", content=b"x", headers=KEY)
        await c.post("/payments", content=b"y", headers=KEY)
        await c.post("/boom", headers=KEY)
    assert events == ["executed", "replayed", "mismatch", "mismatch"]


async def test_problem_bodies_are_json(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis, require_key=True)) as c:
        response = await c.post("/payments")
    assert json.loads(response.content)["title"] == "Idempotency-Key required"


async def test_a_cookie_set_by_the_first_response_does_not_change_the_scope(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis)) as c:
        await c.post("/payments", content=b"x", headers=KEY)
        assert c.cookies.get("session") == "s1"  # the retry carries the new cookie
        retry = await c.post("/payments", content=b"x", headers=KEY)
    assert retry.headers["idempotent-replayed"] == "true"
    assert shop.calls["pay"] == 1


async def test_store_failure_after_the_handler_is_not_called_fenced(
    fresh_redis_server: Any,
) -> None:
    events: list[Any] = []
    shop = Shop()
    shop.delay = 0.2
    redis_client = aioredis.Redis.from_url(fresh_redis_server.url, socket_connect_timeout=0.2)
    async with client(
        shop.app(
            store=redis_client,
            observer=lambda e: e.name == "idempotency.request" and events.append(e.outcome),
        )
    ) as c:
        task = asyncio.create_task(c.post("/payments", content=b"x", headers=KEY))
        await shop.entered.wait()
        await asyncio.to_thread(fresh_redis_server.kill)
        assert (await task).status_code == 201
    await redis_client.aclose()
    assert events == ["store_failed"]
