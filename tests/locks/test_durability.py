"""Tokens across Redis restarts, and round trips per operation counted by the server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio as aioredis

from idemkit.lease import load_script
from idemkit.lock import FencedLock, SyncFencedLock
from idemkit.testing import RedisServer


@pytest.mark.parametrize("time_floor", [True, False])
def test_tokens_keep_increasing_across_a_crash_with_aof(
    fresh_redis_server: RedisServer, time_floor: bool
) -> None:
    tokens = []
    for _ in range(3):
        client = redis.Redis.from_url(fresh_redis_server.url)
        lock = SyncFencedLock(client, "durable", time_floor=time_floor)
        for _ in range(2):
            with lock as token:
                tokens.append(token)
        client.close()
        # SIGKILL: no shutdown, only what AOF (appendfsync always) made durable survives.
        fresh_redis_server.restart(kill=True)
    assert tokens == sorted(set(tokens)), tokens
    if not time_floor:
        assert tokens == list(range(1, 7))  # the counter itself survived every crash


def _script_commands() -> frozenset[str]:
    names: set[str] = set()
    for script in ("lease_claim", "lease_release", "lease_renew"):
        names.update(m.lower() for m in re.findall(r"redis\.call\('(\w+)'", load_script(script)))
    return frozenset(names)


@pytest.fixture
async def clients(
    fresh_redis_server: RedisServer,
) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    app = aioredis.Redis.from_url(fresh_redis_server.url)
    info = aioredis.Redis.from_url(fresh_redis_server.url)
    yield app, info
    await app.aclose()
    await info.aclose()


async def _client_commands(info: aioredis.Redis) -> dict[str, int]:
    """Commands sent by clients: commandstats minus what the scripts call inside Redis."""
    stats = await info.info("commandstats")
    inside = _script_commands()
    counts = {}
    for name, fields in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in inside and command != "info":
            counts[command] = int(fields["calls"])
    return counts


async def test_acquire_release_extend_take_one_round_trip_each(
    clients: tuple[aioredis.Redis, aioredis.Redis],
) -> None:
    app, info = clients
    lock = FencedLock(app, "rt")
    async with lock:  # warm up: SCRIPT LOAD on first use, connection setup
        await lock.extend()
    for operation in ("acquire", "extend", "release"):
        before = await _client_commands(info)
        await getattr(lock, operation)()
        after = await _client_commands(info)
        delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        assert delta == {"evalsha": 1}, (operation, delta)
