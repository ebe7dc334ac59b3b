"""Fixtures for the transaction patterns (the throwaway PostgreSQL is in tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_dsn) as conn:
        yield conn


@pytest.fixture
async def apg(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await psycopg.AsyncConnection.connect(pg_dsn)
    yield conn
    await conn.close()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> str:
    return str(tmp_path / "outbox.db")


@pytest.fixture
def lite(sqlite_path: str) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(sqlite_path, timeout=30)
    yield conn
    conn.close()
