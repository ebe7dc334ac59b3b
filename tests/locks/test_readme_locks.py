"""The README's lock examples, run as written against the test session's redis-server."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.readme import run


async def test_lock_example(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    first = await run("lock")
    ns = await run("lock")  # twice: the second holder reads the first one's total
    assert await ns["fence"].newest("invoice:42") > 0
    data = await ns["fence"].read("invoice:42", await ns["fence"].newest("invoice:42"))
    assert data["total"] == b"200"
    for namespace in (first, ns):
        client: aioredis.Redis = namespace["client"]
        await client.aclose()


async def test_lock_sql_example(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "jobs.db"))
    ns = await run("lock-sql")
    ns["conn"].close()
    ns["sync_client"].close()
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        state, token = conn.execute("SELECT state, fence_token FROM jobs WHERE id = 7").fetchone()
    assert state == "done" and token > 0
