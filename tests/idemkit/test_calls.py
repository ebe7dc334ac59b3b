"""``@idempotent(store, key=...)`` on plain async and sync functions (findings 8 to 12 of the
decorator issue), against a real redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import threading
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pydantic
import pytest
import redis
import redis.asyncio as aioredis

from idemkit import idempotent
from idemkit.errors import (
    CallArgumentError,
    ConfigurationError,
    InvalidKeyError,
    KeyReuseError,
    RequestInFlightError,
    ResultNotStoredError,
    StoreUnavailableError,
)
from idemkit.testing import free_port

# Every test here runs on single Redis, Cluster and Sentinel (see tests/conftest.py).
pytestmark = pytest.mark.topologies


@dataclasses.dataclass(frozen=True)
class Receipt:
    order: str
    amount: Decimal
    at: dt.datetime


class Colour(enum.Enum):
    RED = "red"


class Invoice(pydantic.BaseModel):
    number: int
    lines: list[str]


# -- the basic rules --------------------------------------------------------------------


async def test_async_function_runs_once_per_key(aredis: aioredis.Redis) -> None:
    calls = Counter[str]()

    @idempotent(aredis, key=lambda order_id, amount: order_id, namespace="t.charge")
    async def charge(order_id: str, amount: int) -> dict[str, Any]:
        calls[order_id] += 1
        return {"order": order_id, "amount": amount, "charged": calls[order_id]}

    assert await charge("o1", 10) == {"order": "o1", "amount": 10, "charged": 1}
    assert await charge("o1", 10) == {"order": "o1", "amount": 10, "charged": 1}
    with pytest.raises(KeyReuseError, match="different arguments"):
        await charge("o1", 99)
    assert calls["o1"] == 1


async def test_in_flight_then_an_exception_releases_the_key(aredis: aioredis.Redis) -> None:
    gate = asyncio.Event()
    calls = Counter[str]()

    @idempotent(aredis, key=lambda k: k, namespace="t.work")
    async def work(k: str) -> int:
        calls[k] += 1
        await gate.wait()
        if calls[k] == 1:
            raise ValueError("first attempt fails")
        return calls[k]

    first = asyncio.create_task(work("a"))
    await asyncio.sleep(0.05)
    with pytest.raises(RequestInFlightError) as info:
        await work("a")
    assert info.value.retry_after > 0
    gate.set()
    with pytest.raises(ValueError):
        await first
    assert await work("a") == 2  # the exception released the key
    assert await work("a") == 2


def test_sync_function_runs_once_per_key(sync_redis: redis.Redis) -> None:
    calls = Counter[str]()

    @idempotent(sync_redis, key=lambda user, amount: f"refund-{user}", namespace="t.refund")
    def refund(user: str, amount: int) -> list[Any]:
        calls[user] += 1
        return [user, amount, calls[user]]

    assert refund("ann", 5) == ["ann", 5, 1]
    assert refund("ann", 5) == ["ann", 5, 1]
    with pytest.raises(KeyReuseError):
        refund("ann", 6)


def test_sync_exception_releases_the_key_at_once(sync_redis: redis.Redis) -> None:
    calls = Counter[str]()

    @idempotent(sync_redis, key=lambda: "k", namespace="t.flaky", lease=30)
    def flaky() -> int:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        return calls["flaky"]

    with pytest.raises(RuntimeError):
        flaky()
    assert flaky() == 2  # not RequestInFlightError: the 30 s lease was released, not waited out


def test_sync_function_renews_its_lease(sync_redis: redis.Redis) -> None:
    started = threading.Event()
    release = threading.Event()

    @idempotent(sync_redis, key=lambda: "slow", namespace="t.slow", lease=0.2)
    def slow() -> str:
        started.set()
        release.wait(5)
        return "done"

    worker = threading.Thread(target=slow)
    worker.start()
    started.wait(5)
    threading.Event().wait(0.5)  # more than two leases
    with pytest.raises(RequestInFlightError):
        slow()
    release.set()
    worker.join(5)
    assert slow() == "done"


def test_bad_configuration_is_reported(sync_redis: redis.Redis, aredis: aioredis.Redis) -> None:
    def plain() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="key="):
        idempotent(sync_redis)(plain)
    with pytest.raises(ConfigurationError, match="blocking client"):
        idempotent(aredis, key=lambda: "k")(plain)
    with pytest.raises(ConfigurationError, match="unknown option"):
        idempotent(aredis, ttll=5)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="ttl"):
        idempotent(aredis, ttl=1, lease=5)
    with pytest.raises(ConfigurationError, match="exclude names no parameter"):
        idempotent(sync_redis, key=lambda: "k", exclude=["nope"], namespace="t.plain")(plain)


# -- finding 8: records named by module and qualname only --------------------------------


def test_finding08_nested_functions_and_lambdas_need_a_namespace(sync_redis: redis.Redis) -> None:
    def factory() -> Any:
        def charge(order: str) -> str:
            return order

        return charge

    with pytest.raises(ConfigurationError, match="namespace"):
        idempotent(sync_redis, key=lambda order: order)(factory())
    with pytest.raises(ConfigurationError, match="namespace"):
        idempotent(sync_redis, key=lambda x: x)(lambda x: x)


def test_finding08_two_closures_of_one_factory_keep_their_own_records(
    sync_redis: redis.Redis,
) -> None:
    def factory(currency: str) -> Any:
        @idempotent(sync_redis, key=lambda order: order, namespace=f"charge-{currency}")
        def charge(order: str) -> str:
            return f"{order} in {currency}"

        return charge

    eur, usd = factory("EUR"), factory("USD")
    assert eur("o1") == "o1 in EUR"
    assert usd("o1") == "o1 in USD"  # the second closure ran, with its own result


# -- finding 9: the fingerprint -------------------------------------------------------------


async def test_finding09_positional_and_keyword_calls_are_the_same_call(
    aredis: aioredis.Redis,
) -> None:
    calls = Counter[str]()

    @idempotent(aredis, key=lambda order, amount=1, note="": order, namespace="t.pay")
    async def pay(order: str, amount: int = 1, note: str = "") -> int:
        calls[order] += 1
        return calls[order]

    assert await pay("o1", 5) == 1
    assert await pay("o1", amount=5) == 1
    assert await pay(order="o1", amount=5, note="") == 1
    assert await pay("o2") == 1
    assert await pay("o2", 1) == 1  # the default applied is the same call
    assert calls == {"o1": 1, "o2": 1}


async def test_finding09_an_argument_without_a_canonical_encoding_is_refused_before_running(
    aredis: aioredis.Redis,
) -> None:
    calls = Counter[str]()

    @idempotent(aredis, key=lambda order, ctx: order, namespace="t.ctx")
    async def pay(order: str, ctx: object) -> None:
        calls[order] += 1

    with pytest.raises(CallArgumentError, match=r"'ctx'.*object"):
        await pay("o1", object())
    assert calls["o1"] == 0


def test_finding09_excluded_arguments_and_methods(sync_redis: redis.Redis) -> None:
    calls = Counter[str]()

    class Billing:
        @idempotent(sync_redis, key=lambda self, order, ctx: order, exclude=["ctx"], namespace="b")
        def charge(self, order: str, ctx: object) -> int:
            calls[order] += 1
            return calls[order]

    assert Billing().charge("o1", object()) == 1
    assert Billing().charge("o1", object()) == 1  # another instance, another context: one call


async def test_finding09_dict_order_and_set_order_do_not_matter(aredis: aioredis.Redis) -> None:
    @idempotent(aredis, key=lambda order, meta, tags: order, namespace="t.meta")
    async def tag(order: str, meta: dict[str, int], tags: set[str]) -> str:
        return order

    await tag("o1", {"a": 1, "b": 2}, {"x", "y", "z"})
    await tag("o1", {"b": 2, "a": 1}, {"z", "y", "x"})
    with pytest.raises(KeyReuseError):
        await tag("o1", {"a": 1, "b": 3}, {"x", "y", "z"})


# -- finding 10: results -------------------------------------------------------------------


RICH: list[Any] = [
    dt.datetime(2026, 12, 2, 10, 30, tzinfo=dt.UTC),
    dt.date(2026, 12, 2),
    Decimal("10.05"),
    uuid.UUID("8e03978e-40d5-43e8-bc93-6894a57f9324"),
    Receipt("o1", Decimal("1.10"), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    Invoice(number=7, lines=["a", "b"]),
    {"tags", "set"},
    frozenset({1, 2}),
    ("a", ("nested", 1)),
    2**64 + 5,
    -(2**70),
    {("eu", 1): "tuple keys", 2: "int key"},
    Colour.RED,
    dt.timedelta(days=2, seconds=3),
]


@pytest.mark.parametrize("value", RICH, ids=lambda v: type(v).__name__)
async def test_finding10_results_round_trip_with_their_types(
    aredis: aioredis.Redis, value: Any
) -> None:
    calls = Counter[str]()

    @idempotent(aredis, key=lambda: "k", namespace=f"t.rich.{type(value).__name__}")
    async def make() -> Any:
        calls["make"] += 1
        return value

    assert await make() == value
    replayed = await make()
    assert replayed == value and type(replayed) is type(value)
    assert calls["make"] == 1


async def test_finding10_an_unstorable_result_is_never_run_again(aredis: aioredis.Redis) -> None:
    calls = Counter[str]()

    class Opaque:
        pass

    result = Opaque()

    @idempotent(aredis, key=lambda: "k", namespace="t.opaque")
    async def make() -> Opaque:
        calls["make"] += 1
        return result

    assert await make() is result  # the first caller gets its result
    with pytest.raises(ResultNotStoredError, match="Opaque") as info:
        await make()
    assert info.value.type_name == "Opaque"
    assert calls["make"] == 1


def test_finding10_a_custom_serializer(sync_redis: redis.Redis) -> None:
    class Upper:
        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    @idempotent(sync_redis, key=lambda: "k", namespace="t.upper", serializer=Upper())
    def shout() -> str:
        return "hello"

    assert shout() == "hello"
    assert shout() == "HELLO"  # what the serializer stored


# -- finding 11: key functions -------------------------------------------------------------


@pytest.mark.parametrize("bad", [42, None, "", b""])
async def test_finding11_a_key_that_is_not_text_is_refused_before_running(
    aredis: aioredis.Redis, bad: Any
) -> None:
    calls = Counter[str]()

    @idempotent(aredis, key=lambda: bad, namespace="t.badkey")
    async def work() -> None:
        calls["work"] += 1

    with pytest.raises(InvalidKeyError, match="non-empty str"):
        await work()
    assert calls["work"] == 0


async def test_finding11_non_ascii_and_bytes_keys_work(aredis: aioredis.Redis) -> None:
    calls = Counter[str]()

    @idempotent(aredis, key=lambda k: k, namespace="t.unicode")
    async def work(k: str | bytes) -> int:
        calls["work"] += 1
        return calls["work"]

    assert await work("commande-é-42") == 1
    assert await work("commande-é-42") == 1
    assert await work(b"\xff\x00raw") == 2
    assert await work(b"\xff\x00raw") == 2


# -- finding 12: fail_open ------------------------------------------------------------------


async def test_finding12_fail_open_runs_functions_when_redis_is_down() -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2)
    calls = Counter[str]()

    @idempotent(dead, key=lambda: "k", namespace="t.open", fail_open=True)
    async def open_() -> int:
        calls["open"] += 1
        return calls["open"]

    @idempotent(dead, key=lambda: "k", namespace="t.closed")
    async def closed() -> int:
        calls["closed"] += 1
        return 1

    assert await open_() == 1 and await open_() == 2
    with pytest.raises(StoreUnavailableError):
        await closed()
    assert calls["closed"] == 0
    await dead.aclose()


def test_finding12_fail_open_for_sync_functions() -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2)

    @idempotent(dead, key=lambda: "k", namespace="t.sopen", fail_open=True)
    def open_() -> str:
        return "ran"

    assert open_() == "ran"
    dead.close()
