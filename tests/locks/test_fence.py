"""Resource-side fences: Redis hashes (Fence) and SQL rows (sql_fence) refuse stale tokens."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from idemkit.errors import ConfigurationError, InvalidLockNameError, StaleTokenError
from idemkit.fence import Fence, SyncFence
from idemkit.lock import FencedLock
from idemkit.sql_fence import ParamStyle, fenced_update, fenced_upsert, fenced_upsert_sql

# Every test here runs on single Redis, Cluster and Sentinel (see tests/conftest.py).
pytestmark = pytest.mark.topologies


async def test_stale_write_is_refused_and_nothing_is_written(aredis: aioredis.Redis) -> None:
    fence = Fence(aredis)
    await fence.write("acct", 5, {"balance": 10})
    await fence.write("acct", 5, {"balance": 11})  # the same holder writes again
    await fence.write("acct", 7, {"balance": 20})
    with pytest.raises(StaleTokenError, match="refused token 6") as info:
        await fence.write("acct", 6, {"balance": 99})
    assert (info.value.token, info.value.newest) == (6, 7)
    assert await fence.read("acct", 7) == {"balance": b"20"}
    assert await fence.newest("acct") == 7


async def test_fenced_read_blocks_an_older_read_modify_write(aredis: aioredis.Redis) -> None:
    fence = Fence(aredis)
    await fence.read("ctr", 1)  # old holder reads, then pauses
    assert await fence.read("ctr", 2) == {}  # newer holder reads
    with pytest.raises(StaleTokenError):
        await fence.write("ctr", 1, {"n": 1})  # old holder wakes up: refused
    with pytest.raises(StaleTokenError):
        await fence.read("ctr", 1)
    await fence.write("ctr", 2, {"n": 1})


async def test_lock_token_feeds_the_fence_and_large_tokens_keep_precision(
    aredis: aioredis.Redis,
) -> None:
    fence = Fence(aredis)
    async with FencedLock(aredis, "job") as token:
        assert token > 10**15  # microsecond floor: beyond Lua's %.14g precision
        await fence.write("job", token, {"state": "done"})
    assert await fence.newest("job") == token
    with pytest.raises(StaleTokenError):
        await fence.write("job", token - 1, {"state": "zombie"})


def test_sync_fence_and_bad_input(sync_redis: redis.Redis) -> None:
    fence = SyncFence(sync_redis)
    fence.write("r", 3, {"a": "1"})
    with pytest.raises(StaleTokenError):
        fence.write("r", 2, {"a": "2"})
    assert fence.read("r", 3) == {"a": b"1"} and fence.newest("r") == 3
    with pytest.raises(ConfigurationError, match="reserved"):
        fence.write("r", 4, {"_fence": "0"})
    with pytest.raises(ConfigurationError, match="int >= 0"):
        fence.write("r", -1, {})
    with pytest.raises(InvalidLockNameError):
        fence.write("", 1, {})


# Pairs (older, newer) where a comparison through Lua doubles, or as strings, goes wrong:
# different lengths (string order says "9" > "10"), 2^53 + 1 (the first integer a double
# cannot hold), 2^63 (int64 overflow: the stored token turned negative) and 2^64.
BOUNDARY_PAIRS = [
    (9, 10),
    (99, 100),
    (2**53, 2**53 + 1),
    (2**53 - 1, 2**53),
    (2**63 - 1, 2**63),
    (2**63, 2**63 + 1),
    (2**64 - 1, 2**64),
    (2**64, 2**64 + 1),
    (2**53, 2**64),
]


@pytest.mark.parametrize(("older", "newer"), BOUNDARY_PAIRS)
def test_redis_fence_compares_tokens_exactly(
    sync_redis: redis.Redis, older: int, newer: int
) -> None:
    fence = SyncFence(sync_redis)
    fence.write("w", newer, {"v": "new"})
    with pytest.raises(StaleTokenError) as info:
        fence.write("w", older, {"v": "zombie"})
    assert (info.value.token, info.value.newest) == (older, newer)
    fence.write("w", newer, {"v": "again"})  # the same holder may write again
    assert fence.newest("w") == newer
    assert fence.read("w", newer) == {"v": b"again"}
    # Reads register their token the same way, and are refused the same way.
    fence.read("r", newer)
    with pytest.raises(StaleTokenError):
        fence.read("r", older)
    with pytest.raises(StaleTokenError):
        fence.write("r", older, {"v": "zombie"})
    assert fence.newest("r") == newer
    # Going up is always allowed, and the stored token is exact, not rounded.
    fence.write("up", older, {"v": "1"})
    fence.write("up", newer, {"v": "2"})
    assert fence.newest("up") == newer


async def test_async_fence_at_the_largest_boundaries(aredis: aioredis.Redis) -> None:
    fence = Fence(aredis)
    for token in (2**53, 2**53 + 1, 2**63, 2**64):
        await fence.write("big", token, {"t": str(token)})
        assert await fence.newest("big") == token
        assert await fence.read("big", token) == {"t": str(token).encode()}
    for stale in (2**53 + 1, 2**64 - 1, 9):
        with pytest.raises(StaleTokenError):
            await fence.write("big", stale, {"t": "zombie"})
        with pytest.raises(StaleTokenError):
            await fence.read("big", stale)


def test_redis_fence_refuses_a_token_it_cannot_compare(sync_redis: redis.Redis) -> None:
    # Only the Python API validates types; the script guards its own input as well.
    script = SyncFence(sync_redis)._write
    key = SyncFence(sync_redis).key("raw")
    for bad in ("-1", "1.5", "007", "", "1e20"):
        with pytest.raises(redis.ResponseError, match="decimal integer"):
            script(keys=[key], args=[bad, "v", "1"])
    assert sync_redis.exists(key) == 0


# -- SQL ------------------------------------------------------------------------------------


def _exercise(conn: Any, table: str, style: ParamStyle) -> None:
    """The same scenario on any DB-API connection: newer tokens win, stale ones change nothing."""
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, state TEXT, fence_token BIGINT)")
    big = 1_700_000_000_000_001  # a microsecond-floored token: must survive as an integer
    assert fenced_upsert(cur, table, {"id": "j1"}, {"state": "a"}, big, paramstyle=style)
    assert fenced_upsert(cur, table, {"id": "j1"}, {"state": "b"}, big, paramstyle=style)
    assert fenced_upsert(cur, table, {"id": "j1"}, {"state": "c"}, big + 1, paramstyle=style)
    assert not fenced_upsert(cur, table, {"id": "j1"}, {"state": "z"}, big, paramstyle=style)
    assert not fenced_update(cur, table, {"id": "j1"}, {"state": "z"}, big, paramstyle=style)
    assert fenced_update(cur, table, {"id": "j1"}, {"state": "d"}, big + 2, paramstyle=style)
    assert not fenced_update(cur, table, {"id": "missing"}, {"state": "d"}, big, paramstyle=style)
    conn.commit()
    cur.execute(f"SELECT state, fence_token FROM {table} WHERE id = 'j1'")
    assert tuple(cur.fetchone()) == ("d", big + 2)


# SQL INTEGER/BIGINT columns hold signed 64-bit values: exact up to 2^63 - 1, nothing above.
SQL_PAIRS = [
    (9, 10),
    (2**53, 2**53 + 1),
    (2**53 - 1, 2**53),
    (2**63 - 2, 2**63 - 1),
]


def _exercise_boundaries(conn: Any, table: str, style: ParamStyle) -> None:
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id TEXT PRIMARY KEY, state TEXT, fence_token BIGINT)")
    for i, (older, newer) in enumerate(SQL_PAIRS):
        row = {"id": f"r{i}"}
        assert fenced_upsert(cur, table, row, {"state": "new"}, newer, paramstyle=style)
        assert not fenced_upsert(cur, table, row, {"state": "z"}, older, paramstyle=style)
        assert not fenced_update(cur, table, row, {"state": "z"}, older, paramstyle=style)
        assert fenced_update(cur, table, row, {"state": "ok"}, newer, paramstyle=style)
        cur.execute(f"SELECT state, fence_token FROM {table} WHERE id = 'r{i}'")
        assert tuple(cur.fetchone()) == ("ok", newer)
    for too_big in (2**63, 2**64):
        with pytest.raises(ConfigurationError, match="64-bit"):
            fenced_upsert(cur, table, {"id": "big"}, {"state": "x"}, too_big, paramstyle=style)
        with pytest.raises(ConfigurationError, match="64-bit"):
            fenced_update(cur, table, {"id": "r0"}, {"state": "x"}, too_big, paramstyle=style)
    conn.commit()
    cur.execute(f"SELECT count(*) FROM {table} WHERE state = 'ok'")
    assert cur.fetchone()[0] == len(SQL_PAIRS)


def test_sqlite_fenced_writes_compare_tokens_exactly() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        _exercise_boundaries(conn, "jobs", "qmark")
    finally:
        conn.close()


def test_postgres_fenced_writes_compare_tokens_exactly(pg_conn: Any) -> None:
    table = f"idemkit_fence_{uuid.uuid4().hex[:12]}"
    try:
        _exercise_boundaries(pg_conn, table, "format")
    finally:
        pg_conn.rollback()
        pg_conn.execute(f"DROP TABLE IF EXISTS {table}")
        pg_conn.commit()


def test_sql_helpers_refuse_bad_tokens() -> None:
    conn = sqlite3.connect(":memory:")
    cur = conn.cursor()
    for bad in (-1, True, 1.0, "5"):
        with pytest.raises(ConfigurationError, match="int >= 0"):
            fenced_upsert(cur, "jobs", {"id": "x"}, {}, bad)  # type: ignore[arg-type]
    conn.close()


def test_sqlite_fenced_writes() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        _exercise(conn, "jobs", "qmark")
    finally:
        conn.close()


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[Any]:
    import psycopg

    conn = psycopg.connect(pg_dsn)
    yield conn
    conn.close()


def test_postgres_fenced_writes(pg_conn: Any) -> None:
    table = f"idemkit_fence_{uuid.uuid4().hex[:12]}"
    try:
        _exercise(pg_conn, table, "format")
    finally:
        pg_conn.rollback()
        pg_conn.execute(f"DROP TABLE IF EXISTS {table}")
        pg_conn.commit()


def test_identifiers_cannot_inject_sql() -> None:
    with pytest.raises(ConfigurationError, match="identifier"):
        fenced_upsert_sql("jobs; DROP TABLE x", ["id"], ["s"])
    with pytest.raises(ConfigurationError, match="identifier"):
        fenced_upsert_sql("jobs", ["id"], ["s = 1 --"])
    with pytest.raises(ConfigurationError, match="key column"):
        fenced_upsert_sql("jobs", [], ["s"])
