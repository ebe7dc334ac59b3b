"""``make demo`` runs and tells the truth: one charge per payment, replays, 409 and 422,
orders as sagas (created, out of stock, compensated), and a read model that agrees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.demo import run_client_demo

ROOT = Path(__file__).resolve().parents[2]


async def test_client_demo_on_the_embedded_store() -> None:
    from idemkit.embedded import embedded_redis

    lines: list[str] = []
    assert await run_client_demo(embedded_redis(), lines)
    text = "\n".join(lines)
    assert "409 in flight" in text
    assert "201 replayed" in text
    assert "422 key reused" in text
    assert "'201 executed': 1" in text
    assert "charged 2x" not in text and text.count("charged 1x (once)") == 2
    assert "'created': 3, 'out_of_stock': 5" in text
    assert "outcome: 200 cancelled" in text
    assert "['reserved', 'charged', 'refunded', 'released']" in text
    assert "sagas: 9 orders: 3 completed, 6 compensated" in text
    assert "units sold of hot-" in text and ": 3 (a plain (embedded store) counter)" in text
    assert "verification: PASS" in text


async def test_client_demo_on_real_redis(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        lines: list[str] = []
        assert await run_client_demo(client, lines)
        # A second run against the same server must not see the first run's charges.
        assert await run_client_demo(client, lines)
        assert "3 (a CRDT counter)" in "\n".join(lines)
    finally:
        await client.aclose()


@pytest.mark.timeout(90)
def test_make_demo_entry_point_exits_zero() -> None:
    env = {**os.environ, "DEMO_LOAD_SECONDS": os.environ.get("DEMO_LOAD_SECONDS", "6")}
    env.pop("REDIS_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "loadtests.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo OK" in proc.stdout
    assert "verification: PASS" in proc.stdout
