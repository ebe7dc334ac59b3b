"""The README's CRDT examples, run as written: two regions on two real redis-servers."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from idemkit.testing import RedisServer
from tests.readme import run


async def test_crdt_regions_example(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with RedisServer() as eu, RedisServer() as us:
        monkeypatch.setenv("EU_REDIS_URL", eu.url)
        monkeypatch.setenv("US_REDIS_URL", us.url)
        ns = await run("crdt-regions")
        assert capsys.readouterr().out.splitlines() == ["5", "frozenset({'pear'})"]
        for name in ("eu_redis", "us_redis"):
            client: aioredis.Redis = ns[name]
            await client.aclose()


async def test_crdt_python_example() -> None:
    ns = await run("crdt-python")  # asserts convergence itself
    assert isinstance(ns["data"], bytes)
