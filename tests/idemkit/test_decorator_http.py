"""``@idempotent`` on HTTP handlers: findings 1 to 7 of the decorator issue, each on the real
framework's request cycle against a real redis-server. The shared behaviour suite
(test_http_behaviour.py) runs every middleware test against the decorator too; these add
what the findings were about."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI, Response
from fastapi import Request as FastAPIRequest
from litestar import Request as LitestarRequest
from litestar import post
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from idemkit import idempotent
from idemkit.errors import ConfigurationError
from tests.idemkit.shop import MODES, Shop, client, post_scope

KEY = {"Idempotency-Key": "k-1"}


@pytest.fixture(params=MODES)
def shop(request: pytest.FixtureRequest) -> Shop:
    return Shop(request.param)


async def test_finding01_an_http_exception_is_stored_and_replayed_as_rendered(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/conflict", headers=KEY)
        retry = await c.post("/conflict", headers=KEY)
    assert first.status_code == retry.status_code == 409
    assert retry.content == first.content and "conflict 1" in first.text
    assert retry.headers["idempotent-replayed"] == "true"
    assert shop.calls["conflict"] == 1


async def test_finding02_a_streamed_body_is_stored(shop: Shop, aredis: aioredis.Redis) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = await c.post("/stream", headers=KEY)
        retry = await c.post("/stream", headers=KEY)
    assert first.content == retry.content == b"chunk0;chunk1;chunk2;"
    assert "idempotent-body-omitted" not in retry.headers
    assert shop.calls["stream"] == 1


async def test_finding03_status_and_headers_set_on_the_injected_response_are_replayed(
    aredis: aioredis.Redis,
) -> None:
    app = FastAPI()
    calls = Counter[str]()

    @app.post("/orders")
    @idempotent(aredis)
    async def create(response: Response) -> dict[str, int]:
        calls["create"] += 1
        response.status_code = 202
        response.headers["Location"] = f"/orders/{calls['create']}"
        return {"n": calls["create"]}

    async with client(app) as c:
        first = await c.post("/orders", headers=KEY)
        retry = await c.post("/orders", headers=KEY)
    assert first.status_code == retry.status_code == 202
    assert first.headers["location"] == retry.headers["location"] == "/orders/1"
    assert retry.json() == {"n": 1} and calls["create"] == 1


class Order(pydantic.BaseModel):
    id: uuid.UUID
    at: dt.datetime
    total: float


async def test_finding04_fastapi_data_is_rendered_stored_and_marked_on_replay(
    aredis: aioredis.Redis,
) -> None:
    app = FastAPI()
    calls = Counter[str]()
    order_id = uuid.uuid4()

    @app.post("/raw")
    @idempotent(aredis)
    async def raw() -> dict[str, Any]:
        calls["raw"] += 1
        return {"id": order_id, "at": dt.datetime(2026, 12, 2, tzinfo=dt.UTC), "n": calls["raw"]}

    @app.post("/model", response_model=Order, status_code=201)
    @idempotent(aredis)
    async def model() -> Any:
        calls["model"] += 1
        return {"id": order_id, "at": dt.datetime(2026, 12, 2), "total": 1, "extra": "dropped"}

    @app.post("/sync")
    @idempotent(aredis)
    def sync_handler() -> dict[str, int]:
        calls["sync"] += 1
        return {"n": calls["sync"]}

    async with client(app) as c:
        for path, status in (("/raw", 200), ("/model", 201), ("/sync", 200)):
            first = await c.post(path, headers={"Idempotency-Key": path})
            retry = await c.post(path, headers={"Idempotency-Key": path})
            assert first.status_code == retry.status_code == status, first.text
            assert retry.content == first.content
            assert retry.headers["idempotent-replayed"] == "true"
            assert "idempotent-replayed" not in first.headers
    assert first.json() == {"n": 1}
    assert calls == {"raw": 1, "model": 1, "sync": 1}


async def test_finding04_a_response_model_error_releases_the_key(aredis: aioredis.Redis) -> None:
    app = FastAPI()
    calls = Counter[str]()

    @app.post("/bad", response_model=Order)
    @idempotent(aredis)
    async def bad() -> Any:
        calls["bad"] += 1
        return {"id": "not a uuid"}

    async with client(app) as c:
        first = await c.post("/bad", headers=KEY)
        retry = await c.post("/bad", headers=KEY)
    assert first.status_code == retry.status_code == 500
    assert calls["bad"] == 2  # an unhandled error is never stored: the retry runs again


async def test_finding05_decorated_handlers_see_their_fencing_token(
    shop: Shop, aredis: aioredis.Redis
) -> None:
    async with client(shop.app(store=aredis)) as c:
        first = (await c.post("/token", headers={"Idempotency-Key": "t1"})).json()["token"]
        second = (await c.post("/token", headers={"Idempotency-Key": "t2"})).json()["token"]
        plain = (await c.get("/token")).json()["token"]
    assert isinstance(first, int) and second > first
    assert plain is None


class ChunkedBody:
    """An ASGI receive that sends a large body in 1 KiB chunks, counting what was taken."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks
        self.taken = 0

    async def __call__(self) -> dict[str, Any]:
        if self.left == 0:
            return {"type": "http.disconnect"}
        self.left -= 1
        self.taken += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": self.left > 0}


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_finding06_a_large_body_is_refused_before_it_is_buffered(
    shop: Shop, aredis: aioredis.Redis, declared: bool
) -> None:
    app = shop.app(store=aredis, max_body_bytes=4096)
    headers = [(b"idempotency-key", b"big-upload"), (b"host", b"shop.test")]
    if declared:
        headers.append((b"content-length", str(1024 * 10_000).encode()))
    receive = ChunkedBody(10_000)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(post_scope("/payments", headers), receive, send)
    assert sent[0]["status"] == 413
    assert receive.taken <= (0 if declared else 5), receive.taken
    assert shop.calls["pay"] == 0


async def test_finding07_handlers_without_a_request_parameter_work(
    aredis: aioredis.Redis,
) -> None:
    app = FastAPI()
    calls = Counter[str]()

    @app.post("/ping")
    @idempotent(aredis)
    async def ping() -> dict[str, int]:
        calls["ping"] += 1
        return {"n": calls["ping"]}

    async with client(app) as c:
        assert (await c.post("/ping", headers=KEY)).json() == {"n": 1}
        assert (await c.post("/ping", headers=KEY)).json() == {"n": 1}


def test_finding07_unsupported_handlers_fail_when_decorated(aredis: aioredis.Redis) -> None:
    class Endpoint:
        pass

    async def generator(request: Request) -> AsyncIterator[bytes]:
        yield b"x"

    def unknown(a: int) -> int:
        return a

    with pytest.raises(ConfigurationError, match="not one"):
        idempotent(aredis)(Endpoint)
    with pytest.raises(ConfigurationError, match="generator"):
        idempotent(aredis)(generator)
    with pytest.raises(ConfigurationError, match="IdempotencyMiddleware"):
        idempotent(aredis, framework="django")(unknown)


def test_finding07_a_litestar_function_below_its_route_decorator_is_refused(
    aredis: aioredis.Redis,
) -> None:
    async def handler(request: LitestarRequest[Any, Any, Any]) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"above @post"):
        idempotent(aredis)(handler)
    assert idempotent(aredis)(post("/x")(handler)) is not None  # above: accepted


async def test_the_decorator_refuses_a_blocking_client_for_handlers() -> None:
    import redis

    async def create(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x")

    with pytest.raises(ConfigurationError, match="asyncio client"):
        idempotent(redis.Redis())(create)


async def test_a_request_parameter_under_another_name_is_found(aredis: aioredis.Redis) -> None:
    app = FastAPI()

    @app.post("/named")
    @idempotent(aredis)
    async def named(incoming: FastAPIRequest) -> dict[str, str]:
        return {"path": incoming.url.path}

    async with client(app) as c:
        await c.post("/named", headers=KEY)
        retry = await c.post("/named", headers=KEY)
    assert retry.json() == {"path": "/named"} and retry.headers["idempotent-replayed"] == "true"
