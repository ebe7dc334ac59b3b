"""The saga orchestrator on a real Redis: order, compensation, parking, fencing, HTTP steps."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from idemkit.errors import LeaseLostError
from idemkit.middleware import IdempotencyMiddleware
from idemkit.observe import Event
from idemkit.patterns import (
    RedisSagaLog,
    Saga,
    SagaBusyError,
    SagaConflictError,
    SagaDefinitionError,
    SagaOrchestrator,
    StepContext,
    StepFailed,
)
from idemkit.patterns.saga import idempotency_key
from integrations.httpx_client import IdempotentTransport


class Book:
    """Step functions that record every call, and can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.keys: list[str] = []
        self.fail: dict[tuple[str, str], list[BaseException]] = {}

    def fn(self, step: str, kind: str) -> Any:
        async def call(ctx: StepContext) -> Any:
            self.calls.append((step, kind))
            self.keys.append(ctx.idempotency_key)
            queued = self.fail.get((step, kind))
            if queued:
                raise queued.pop(0)
            return {"step": step, "seen": sorted(ctx.results)}

        return call

    def saga(
        self, name: str = "order", steps: tuple[str, ...] = ("reserve", "charge", "ship")
    ) -> Saga:
        saga = Saga(name)
        for step in steps:
            saga.add(step, self.fn(step, "action"), compensation=self.fn(step, "compensation"))
        return saga


async def test_a_saga_runs_its_steps_in_order_and_completes(aredis: aioredis.Redis) -> None:
    book = Book()
    orchestrator = SagaOrchestrator(aredis, [book.saga()])
    outcome = await orchestrator.run("order", "o-1", {"items": 2})
    assert outcome.status == "completed"
    assert book.calls == [("reserve", "action"), ("charge", "action"), ("ship", "action")]
    assert outcome.results["ship"] == {"step": "ship", "seen": ["charge", "reserve"]}
    assert book.keys == [
        idempotency_key("order", "o-1", s, "action") for s in ("reserve", "charge", "ship")
    ]
    assert len(set(book.keys)) == 3
    # Running it again is idempotent: the stored outcome, no step runs again.
    assert await orchestrator.run("order", "o-1", {"items": 2}) == outcome
    assert len(book.calls) == 3
    with pytest.raises(SagaConflictError):
        await orchestrator.run("order", "o-1", {"items": 3})
    assert await aredis.zcard("idemkit:saga:index:unfinished") == 0
    assert await aredis.pttl("idemkit:saga:{o-1}") > 0  # finished records expire


async def test_a_definitive_failure_compensates_earlier_steps_in_reverse(
    aredis: aioredis.Redis,
) -> None:
    book = Book()
    book.fail[("ship", "action")] = [StepFailed("no courier")]
    events: list[Event] = []
    orchestrator = SagaOrchestrator(aredis, [book.saga()], observer=events.append)
    outcome = await orchestrator.run("order", "o-2", {})
    assert outcome.status == "compensated"
    assert (outcome.failed_step, outcome.error) == ("ship", "no courier")
    assert book.calls == [
        ("reserve", "action"),
        ("charge", "action"),
        ("ship", "action"),
        ("charge", "compensation"),
        ("reserve", "compensation"),
    ]
    assert book.keys[3] == idempotency_key("order", "o-2", "charge", "compensation")
    assert [e.outcome for e in events if e.name == "saga.finished"] == ["compensated"]


async def test_transient_errors_are_retried_and_an_unknown_outcome_is_compensated(
    aredis: aioredis.Redis,
) -> None:
    book = Book()
    book.fail[("charge", "action")] = [TimeoutError()]
    orchestrator = SagaOrchestrator(aredis, [book.saga()], retry_backoff=0.001)
    assert (await orchestrator.run("order", "o-3", {})).status == "completed"
    assert book.calls.count(("charge", "action")) == 2
    assert len(set(book.keys)) == 3  # the retry carried the same key

    book = Book()
    book.fail[("charge", "action")] = [ConnectionError()] * 3
    orchestrator = SagaOrchestrator(aredis, [book.saga()], retry_backoff=0.001)
    outcome = await orchestrator.run("order", "o-4", {})
    assert outcome.status == "compensated"
    # The charge may or may not have happened: it is compensated too.
    assert book.calls[-2:] == [("charge", "compensation"), ("reserve", "compensation")]


async def test_a_compensation_that_keeps_failing_is_parked_and_can_be_retried(
    aredis: aioredis.Redis,
) -> None:
    book = Book()
    book.fail[("ship", "action")] = [StepFailed("no courier")]
    book.fail[("charge", "compensation")] = [RuntimeError("refunds down")] * 2
    events: list[Event] = []
    orchestrator = SagaOrchestrator(
        aredis,
        [book.saga()],
        compensation_attempts=2,
        retry_backoff=0.001,
        observer=events.append,
    )
    outcome = await orchestrator.run("order", "o-5", {})
    assert (outcome.status, outcome.parked_step) == ("parked", "charge")
    assert "refunds down" in (outcome.error or "")
    assert ("reserve", "compensation") not in book.calls  # stopped, in order, not skipped
    assert [e.attrs["step"] for e in events if e.name == "saga.parked"] == ["charge"]
    assert [p.saga_id for p in await orchestrator.parked()] == ["o-5"]
    assert await aredis.pttl("idemkit:saga:{o-5}") == -1  # kept: never dropped
    assert (await orchestrator.recover()) == []  # recovery leaves it to a person

    outcome = await orchestrator.retry_parked("o-5")
    assert outcome is not None and outcome.status == "compensated"
    assert book.calls[-2:] == [("charge", "compensation"), ("reserve", "compensation")]
    assert await orchestrator.parked() == []


async def test_one_orchestrator_per_saga(aredis: aioredis.Redis) -> None:
    book = Book()
    gate, entered = asyncio.Event(), asyncio.Event()

    async def slow(ctx: StepContext) -> None:
        book.calls.append(("slow", "action"))
        entered.set()
        await gate.wait()

    saga = Saga("slow").add("wait", slow)
    first = SagaOrchestrator(aredis, [saga])
    second = SagaOrchestrator(aredis, [saga])
    running = asyncio.create_task(first.run(saga, "s-1", {}))
    await entered.wait()
    with pytest.raises(SagaBusyError):
        await second.run(saga, "s-1", {})
    assert await second.recover() == []  # busy sagas are skipped, not stolen
    gate.set()
    assert (await running).status == "completed"
    assert book.calls == [("slow", "action")]


async def test_an_orchestrator_that_lost_its_lease_cannot_move_the_saga(
    aredis: aioredis.Redis,
) -> None:
    book = Book()
    paused = asyncio.Event()
    resume = asyncio.Event()

    async def stall(ctx: StepContext) -> str:
        book.calls.append(("stall", ctx.kind))
        if not paused.is_set():
            paused.set()
            await resume.wait()  # a GC pause: the lease lapses meanwhile
        return "done"

    saga = Saga("stall").add("stall", stall).add("after", book.fn("after", "action"))
    old = SagaOrchestrator(aredis, [saga], lease_ms=60_000)
    task = asyncio.create_task(old.run(saga, "z-1", {}))
    await paused.wait()
    await aredis.delete("idemkit:lock:{saga:z-1}")  # its lease lapsed
    new = SagaOrchestrator(aredis, [saga])
    assert [o.status for o in await new.recover()] == ["completed"]
    resume.set()
    with pytest.raises(LeaseLostError):
        await task
    assert book.calls == [("stall", "action"), ("stall", "action"), ("after", "action")]
    assert (await new.status("z-1")).status == "completed"  # type: ignore[union-attr]


def test_definitions_are_checked() -> None:
    book = Book()
    with pytest.raises(SagaDefinitionError):
        Saga("x").add("a", book.fn("a", "action")).add("a", book.fn("a", "action"))
    with pytest.raises(SagaDefinitionError):
        SagaOrchestrator(None, [Saga("empty")])  # type: ignore[arg-type]
    assert len(idempotency_key("s" * 300, "id", "step", "action")) < 255


async def test_http_steps_through_the_middleware_run_once_when_the_saga_is_resumed(
    aredis: aioredis.Redis,
) -> None:
    executions: Counter[str] = Counter()

    async def charge(request: Request) -> JSONResponse:
        executions["charge"] += 1
        return JSONResponse({"charge": executions["charge"]}, status_code=201)

    service = Starlette(
        routes=[Route("/charge", charge, methods=["POST"])],
        middleware=[Middleware(IdempotencyMiddleware, store=aredis)],
    )
    # Through the retrying transport too: it keeps the step's key on its own retries.
    transport = IdempotentTransport(httpx.ASGITransport(app=service))
    http = httpx.AsyncClient(transport=transport, base_url="http://svc")
    crash = {"once": True}

    async def charge_step(ctx: StepContext) -> Any:
        response = await http.post("/charge", json=ctx.data, headers=ctx.headers)
        response.raise_for_status()
        if crash.pop("once", False):
            # The orchestrator dies after the service charged and before the log knows.
            await aredis.delete("idemkit:lock:{saga:pay-1}")
            raise asyncio.CancelledError
        return response.json()

    saga = Saga("pay").add("charge", charge_step)
    with pytest.raises(asyncio.CancelledError):
        await SagaOrchestrator(aredis, [saga]).run(saga, "pay-1", {"amount": 5})
    (outcome,) = await SagaOrchestrator(aredis, [saga]).recover()
    assert outcome.status == "completed"
    assert outcome.results["charge"] == {"charge": 1}  # the stored response, replayed
    assert executions["charge"] == 1
    await http.aclose()


async def test_the_log_is_fenced(aredis: aioredis.Redis) -> None:
    log = RedisSagaLog(aredis)
    assert await log.load("f-1", 5) is None
    from idemkit.errors import StaleTokenError
    from idemkit.patterns import SagaRecord

    await log.save(SagaRecord("f-1", "order", {}), 5)
    assert await log.load("f-1", 7) is not None
    with pytest.raises(StaleTokenError):
        await log.save(SagaRecord("f-1", "order", {}, "completed"), 5)
