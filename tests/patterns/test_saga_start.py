"""Sagas started by one process and driven by another (a service that answers "accepted").

``SagaOrchestrator.start`` logs a saga without driving it; any orchestrator's ``recover`` or
``resume`` drives it. The demo shop places orders this way: its HTTP workers start sagas, its
orchestrator processes drive them.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from idemkit.patterns import (
    Saga,
    SagaBusyError,
    SagaConflictError,
    SagaOrchestrator,
    StepContext,
)
from idemkit.patterns.saga import idempotency_key


def _saga(calls: list[str]) -> Saga:
    def step(name: str) -> Any:
        async def call(ctx: StepContext) -> str:
            calls.append(f"{name}:{ctx.idempotency_key}")
            return name

        return call

    return Saga("order").add("reserve", step("reserve")).add("charge", step("charge"))


async def test_a_started_saga_is_logged_and_left_for_an_orchestrator(
    aredis: aioredis.Redis,
) -> None:
    calls: list[str] = []
    starter = SagaOrchestrator(aredis, [_saga(calls)])
    outcome = await starter.start("order", "o-1", {"qty": 1})
    assert outcome.status == "running" and outcome.results == {}
    assert calls == []  # nothing ran: starting only logs
    assert await aredis.zrange("idemkit:saga:index:unfinished", 0, -1) == [b"o-1"]
    # Starting again with the same input is a no-op; other input is a conflict.
    assert await starter.start("order", "o-1", {"qty": 1}) == outcome
    with pytest.raises(SagaConflictError):
        await starter.start("order", "o-1", {"qty": 2})
    # Any orchestrator drives it, as recovery does for a saga whose driver died.
    driver = SagaOrchestrator(aredis, [_saga(calls)])
    (done,) = await driver.recover()
    assert done.status == "completed" and done.results == {"reserve": "reserve", "charge": "charge"}
    assert calls == [
        f"reserve:{idempotency_key('order', 'o-1', 'reserve', 'action')}",
        f"charge:{idempotency_key('order', 'o-1', 'charge', 'action')}",
    ]
    assert await aredis.zcard("idemkit:saga:index:unfinished") == 0
    # A finished saga started again reports where it ended.
    assert (await starter.start("order", "o-1", {"qty": 1})).status == "completed"


async def test_start_refuses_while_another_process_starts_the_same_saga(
    aredis: aioredis.Redis,
) -> None:
    orchestrator = SagaOrchestrator(aredis, [_saga([])])
    from idemkit.lock import FencedLock

    held = FencedLock(aredis, "saga:o-2", lease_ms=5_000)
    await held.acquire()
    try:
        with pytest.raises(SagaBusyError):
            await orchestrator.start("order", "o-2", {"qty": 1})
    finally:
        await held.release()
    assert (await orchestrator.start("order", "o-2", {"qty": 1})).status == "running"


async def test_an_index_entry_without_a_record_is_cleaned_up_by_recovery(
    aredis: aioredis.Redis,
) -> None:
    """A starter that died between indexing a saga and logging it leaves an id in the
    unfinished index with no record; recovery must drop it, not retry it forever."""
    orchestrator = SagaOrchestrator(aredis, [_saga([])])
    await aredis.zadd("idemkit:saga:index:unfinished", {"ghost": 1.0})
    assert await orchestrator.recover() == []
    assert await aredis.zcard("idemkit:saga:index:unfinished") == 0
    assert await orchestrator.resume("ghost") is None
