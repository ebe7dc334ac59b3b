"""Fixtures for the transaction patterns: one throwaway PostgreSQL for the session."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from idemkit.testing import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """DSN of the session server with an empty ``public`` schema."""
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return postgres_server.dsn


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
