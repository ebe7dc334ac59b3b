"""A saga whose orchestrator lost its lease during a Redis outage is left to another one.

Found by the shop's load test with ``--fault restart-redis``: the lease ran out while the
watchdog's renewal waited on Redis, the orchestrator stopped with ``LeaseLostError``, and
then the renewal went through once Redis answered again. The handle was neither "held" (its
lease had run out locally) nor "lost", so the orchestrator did not release it, and its
watchdog went on renewing the lease of a saga nobody drove: no other orchestrator could
ever take it over.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis.asyncio as aioredis

from idemkit.errors import LeaseLostError
from idemkit.patterns import Saga, SagaOrchestrator, StepContext
from idemkit.testing import RedisServer

LEASE_MS = 600


async def test_a_lease_that_ran_out_in_an_outage_is_given_up(
    fresh_redis_server: RedisServer,
) -> None:
    server = fresh_redis_server
    client = aioredis.Redis.from_url(server.url)  # no timeout: calls wait for a paused server

    async def stalled(ctx: StepContext) -> str:
        server.pause()
        threading.Timer(2.0, server.resume).start()  # Redis answers again in 2 s
        await asyncio.sleep(LEASE_MS * 2 / 1000)  # the lease runs out; the renewal waits
        return "stalled"

    async def quick(ctx: StepContext) -> str:
        return "done"

    first = SagaOrchestrator(client, [Saga("outage").add("only", stalled)], lease_ms=LEASE_MS)
    with pytest.raises(LeaseLostError):
        await first.run("outage", "s-1", {})
    other = SagaOrchestrator(client, [Saga("outage").add("only", quick)], lease_ms=LEASE_MS)
    try:
        outcome = await other.resume("s-1", wait=3 * LEASE_MS / 1000)
        assert outcome is not None and outcome.status == "completed"
        assert outcome.results == {"only": "done"}
    finally:
        await client.aclose()
