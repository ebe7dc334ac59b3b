"""``idemkit.deadline.Deadlines``: many awaits, one timeout, one timer."""

from __future__ import annotations

import asyncio
import time

import pytest

from idemkit.deadline import Deadlines


async def test_calls_that_finish_in_time_are_untouched() -> None:
    deadlines = Deadlines(0.2)

    async def worker(n: int) -> int:
        for _ in range(30):
            await deadlines.run(asyncio.sleep(0.001))
        return n

    assert await asyncio.gather(*(worker(n) for n in range(50))) == list(range(50))


async def test_a_call_past_its_deadline_raises_timeout_error_close_to_it() -> None:
    deadlines = Deadlines(0.1)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await deadlines.run(asyncio.sleep(5))
    assert 0.1 <= time.monotonic() - started < 0.3
    assert await deadlines.run(asyncio.sleep(0, result="next")) == "next"  # still usable


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    deadlines = Deadlines(5)
    task = asyncio.create_task(deadlines.run(asyncio.sleep(5)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_slow_and_fast_calls_mixed() -> None:
    deadlines = Deadlines(0.1)

    async def call(delay: float) -> str:
        try:
            await deadlines.run(asyncio.sleep(delay))
        except TimeoutError:
            return "timeout"
        return "ok"

    results = await asyncio.gather(*(call(0.3 if n % 5 == 0 else 0.01) for n in range(40)))
    assert results == ["timeout" if n % 5 == 0 else "ok" for n in range(40)]
