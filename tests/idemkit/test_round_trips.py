"""Redis commands per request, counted by the server (``INFO commandstats`` deltas).

Round trips are the unit of cost (docs/DESIGN.md): a replay is one EVALSHA, a first execution
is two (claim, complete), and a handler only pays for renewals when it outlives a renewal
interval. Counting on the server catches any extra command a client library or a refactor
slips in (a SCRIPT LOAD per request, an EXISTS before the claim, a second GET...).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from idemkit.lease import LeaseStore, load_script
from idemkit.testing import RedisServer
from tests.idemkit.shop import MODES, Shop, client


class CountingStore(LeaseStore):
    """A lease store that counts renewals, so the test knows how many to expect."""

    renewals = 0

    async def renew(self, key: str, token: int, lease_ms: int) -> bool:
        self.renewals += 1
        return await super().renew(key, token, lease_ms)


@pytest.fixture
async def server_client(
    fresh_redis_server: RedisServer,
) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    """(client for the middleware, separate client for INFO)."""
    app_client = aioredis.Redis.from_url(fresh_redis_server.url)
    info_client = aioredis.Redis.from_url(fresh_redis_server.url)
    yield app_client, info_client
    await app_client.aclose()
    await info_client.aclose()


def _script_commands() -> frozenset[str]:
    """Commands the lease scripts call from Lua (commandstats counts those too)."""
    names: set[str] = set()
    for script in ("lease_claim", "lease_renew", "lease_complete", "lease_release"):
        names.update(m.lower() for m in re.findall(r"redis\.call\('(\w+)'", load_script(script)))
    return frozenset(names)


SCRIPT_COMMANDS = _script_commands()


async def command_counts(info_client: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await info_client.info("commandstats")
    counts: dict[str, int] = {}
    for name, fields in stats.items():
        command = name.removeprefix("cmdstat_")
        if command == "info":
            continue
        counts[command] = int(fields["calls"])
    return counts


def sent(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Commands clients sent between two snapshots: the delta without the scripts' own calls.

    Every lease script reads its record with exactly one HMGET, so the HMGET delta counts the
    script runs independently of the EVALSHA count; the two must agree, which also catches a
    client-side HMGET hidden among the scripts' commands.
    """
    changed = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    top = {k: v for k, v in changed.items() if k not in SCRIPT_COMMANDS}
    scripts_run = top.get("evalsha", 0) + top.get("eval", 0)
    assert changed.get("hmget", 0) == scripts_run, changed
    return top


@pytest.mark.parametrize("mode", MODES)
async def test_replay_is_one_evalsha_and_first_execution_two(
    server_client: tuple[aioredis.Redis, aioredis.Redis], mode: str
) -> None:
    """For the middleware and for the decorator on each framework alike."""
    app_client, info_client = server_client
    shop = Shop(mode)
    async with client(shop.app(store=app_client)) as c:
        # Warm up: the scripts get loaded (NOSCRIPT fallback) and the connection is set up.
        await c.post("/payments", content=b"warm", headers={"Idempotency-Key": "warm-up"})
        await c.post("/payments", content=b"warm", headers={"Idempotency-Key": "warm-up"})

        before = await command_counts(info_client)
        first = await c.post("/payments", content=b"10 EUR", headers={"Idempotency-Key": "k1"})
        after_first = await command_counts(info_client)
        replay = await c.post("/payments", content=b"10 EUR", headers={"Idempotency-Key": "k1"})
        after_replay = await command_counts(info_client)

    assert first.status_code == replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert shop.calls["pay"] == 2  # warm-up + k1, the replays did not execute
    assert sent(before, after_first) == {"evalsha": 2}
    assert sent(after_first, after_replay) == {"evalsha": 1}


async def test_many_first_executions_cost_two_commands_each(
    server_client: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    app_client, info_client = server_client
    shop = Shop()
    async with client(shop.app(store=app_client)) as c:
        await c.post("/payments", content=b"w", headers={"Idempotency-Key": "warm-up"})
        before = await command_counts(info_client)
        for i in range(20):
            response = await c.post("/payments", content=b"x", headers={"Idempotency-Key": f"n{i}"})
            assert response.status_code == 201
        for i in range(20):
            response = await c.post("/payments", content=b"x", headers={"Idempotency-Key": f"n{i}"})
            assert response.headers["idempotent-replayed"] == "true"
        after = await command_counts(info_client)
    assert sent(before, after) == {"evalsha": 20 * 2 + 20}


async def test_renewals_are_paid_only_by_handlers_that_outlive_an_interval(
    server_client: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    app_client, info_client = server_client
    store = CountingStore(app_client)
    shop = Shop()
    # lease 0.3 s: renewal every 0.1 s
    async with client(shop.app(store=store, lease=0.3)) as c:
        await c.post("/payments", content=b"w", headers={"Idempotency-Key": "warm-up"})
        # Load the renew script too, so a NOSCRIPT retry does not show up in the count.
        record = store.record_key("warm-renew")
        await store.renew(record, 1, 300)
        store.renewals = 0

        before = await command_counts(info_client)
        fast = await c.post("/payments", content=b"fast", headers={"Idempotency-Key": "fast"})
        after_fast = await command_counts(info_client)
        assert fast.status_code == 201
        assert store.renewals == 0
        assert sent(before, after_fast) == {"evalsha": 2}

        shop.delay = 0.35  # outlives the renewal interval several times
        slow = await c.post("/payments", content=b"slow", headers={"Idempotency-Key": "slow"})
        shop.delay = 0.0
        await asyncio.sleep(0)
        after_slow = await command_counts(info_client)
    assert slow.status_code == 201
    assert store.renewals >= 1
    assert sent(after_fast, after_slow) == {"evalsha": 2 + store.renewals}


# --- auto-pipelining (idemkit/pipeline.py): shared writes stay correct -----------------------


async def test_middleware_pipelines_a_plain_redis_client(
    server_client: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    from idemkit.middleware import as_lease_store
    from idemkit.pipeline import PipelinedLeaseStore

    app_client, _ = server_client
    assert isinstance(as_lease_store(app_client), PipelinedLeaseStore)


async def test_concurrent_claims_share_writes_and_each_gets_its_own_reply(
    server_client: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    from idemkit.pipeline import PipelinedLeaseStore

    app_client, info_client = server_client
    store = PipelinedLeaseStore(app_client)
    warm = await store.claim(store.record_key("warm"), b"f", 30_000, 60_000)
    await store.complete(store.record_key("warm"), warm.token, b"r", 60_000)
    before = await command_counts(info_client)
    keys = [store.record_key(f"c{i}") for i in range(64)]
    claims = await asyncio.gather(
        *(store.claim(k, f"fp{i}".encode(), 30_000, 60_000) for i, k in enumerate(keys))
    )
    assert all(c.outcome == 0 for c in claims)
    done = await asyncio.gather(
        *(
            store.complete(k, c.token, f"r{i}".encode(), 60_000)
            for i, (k, c) in enumerate(zip(keys, claims, strict=True))
        )
    )
    assert all(done)
    replays = await asyncio.gather(
        *(store.claim(k, f"fp{i}".encode(), 30_000, 60_000) for i, k in enumerate(keys))
    )
    assert [r.result for r in replays] == [f"r{i}".encode() for i in range(64)]
    assert sent(before, await command_counts(info_client)) == {"evalsha": 64 * 3}


async def test_cancelled_callers_do_not_desynchronise_the_connection(
    server_client: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    from idemkit.pipeline import PipelinedLeaseStore

    app_client, _ = server_client
    store = PipelinedLeaseStore(app_client)
    for attempt in range(20):
        tasks = [
            asyncio.create_task(
                store.claim(store.record_key(f"x{attempt}-{i}"), b"f", 30_000, 60_000)
            )
            for i in range(16)
        ]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results[1::2]:
            assert not isinstance(result, BaseException)
            assert result.outcome == 0
    # Every reply still lands on its own caller: a fresh claim and its completion agree.
    claim = await store.claim(store.record_key("after"), b"f", 30_000, 60_000)
    assert await store.complete(store.record_key("after"), claim.token, b"ok", 60_000)
    replay = await store.claim(store.record_key("after"), b"f", 30_000, 60_000)
    assert replay.result == b"ok"


async def test_script_flush_and_lost_connection_are_handled(
    fresh_redis_server: RedisServer,
) -> None:
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from idemkit.errors import StoreUnavailableError
    from idemkit.pipeline import PipelinedLeaseStore

    app_client = aioredis.Redis.from_url(
        fresh_redis_server.url,
        socket_timeout=1.0,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 1),
    )
    store = PipelinedLeaseStore(app_client)
    try:
        assert (await store.claim(store.record_key("a"), b"f", 30_000, 60_000)).outcome == 0
        loads = await app_client.info("commandstats")
        await app_client.script_flush()  # NOSCRIPT: loaded again, the claims still answer
        claims = await asyncio.gather(
            *(store.claim(store.record_key(f"b{i}"), b"f", 30_000, 60_000) for i in range(16))
        )
        assert all(c.outcome == 0 for c in claims)
        after = await app_client.info("commandstats")
        # one shared SCRIPT LOAD for the 16 callers that met NOSCRIPT, and no new connection
        assert after["cmdstat_script|load"]["calls"] - loads["cmdstat_script|load"]["calls"] == 1
        assert after["cmdstat_hello"]["calls"] == loads["cmdstat_hello"]["calls"]

        await asyncio.to_thread(fresh_redis_server.kill)
        results = await asyncio.gather(
            *(store.claim(store.record_key(f"d{i}"), b"f", 30_000, 60_000) for i in range(8)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StoreUnavailableError) for r in results), results

        await asyncio.to_thread(fresh_redis_server.restart)
        # The held connection is dead; the pipeline reconnects (client retry) transparently.
        assert (await store.claim(store.record_key("c"), b"f", 30_000, 60_000)).outcome == 0
    finally:
        await app_client.aclose()
