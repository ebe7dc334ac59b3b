"""The saga orchestrator with its log in PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
import redis.asyncio as aioredis

from idemkit.errors import LeaseLostError, StaleTokenError
from idemkit.patterns import (
    PostgresSagaLog,
    Saga,
    SagaOrchestrator,
    SagaRecord,
    StepContext,
    StepFailed,
)
from tests.patterns.test_saga import Book


@pytest.fixture
async def pg_log(pg_dsn: str) -> AsyncIterator[PostgresSagaLog]:
    log = PostgresSagaLog(lambda: psycopg.AsyncConnection.connect(pg_dsn))
    await log.setup()
    await log.setup()  # idempotent
    yield log
    await log.close()


async def test_sagas_complete_compensate_and_park_with_a_postgres_log(
    aredis: aioredis.Redis, pg_log: PostgresSagaLog
) -> None:
    book = Book()
    orchestrator = SagaOrchestrator(aredis, [book.saga()], saga_log=pg_log, compensation_attempts=1)
    done = await orchestrator.run("order", "p-1", {"n": 1})
    assert done.status == "completed" and done.results["ship"]["step"] == "ship"
    assert await orchestrator.run("order", "p-1", {"n": 1}) == done
    book.fail[("ship", "action")] = [StepFailed("no courier")]
    assert (await orchestrator.run("order", "p-2", {})).status == "compensated"
    book.fail[("ship", "action")] = [StepFailed("no courier")]
    book.fail[("reserve", "compensation")] = [RuntimeError("stock service down")]
    parked = await orchestrator.run("order", "p-3", {})
    assert (parked.status, parked.parked_step) == ("parked", "reserve")
    assert [p.saga_id for p in await orchestrator.parked()] == ["p-3"]
    retried = await orchestrator.retry_parked("p-3")
    assert retried is not None and retried.status == "compensated"
    assert await pg_log.unfinished(10) == []


async def test_the_postgres_log_is_fenced_and_recovery_takes_over(
    aredis: aioredis.Redis, pg_log: PostgresSagaLog
) -> None:
    assert await pg_log.load("f-1", 5) is None
    await pg_log.save(SagaRecord("f-1", "order", {}), 5)
    assert await pg_log.load("f-1", 7) is not None
    with pytest.raises(StaleTokenError):
        await pg_log.save(SagaRecord("f-1", "order", {}, "completed"), 5)

    paused, resume = asyncio.Event(), asyncio.Event()

    async def stall(ctx: StepContext) -> str:
        if not paused.is_set():
            paused.set()
            await resume.wait()
        return "done"

    saga = Saga("stall").add("stall", stall)
    task = asyncio.create_task(SagaOrchestrator(aredis, [saga], saga_log=pg_log).run(saga, "z", {}))
    await paused.wait()
    await aredis.delete("idemkit:lock:{saga:z}")
    recovered = await SagaOrchestrator(aredis, [saga], saga_log=pg_log).recover()
    assert [o.status for o in recovered] == ["completed"]
    resume.set()
    with pytest.raises(LeaseLostError):
        await task
