"""The transactional outbox: an event is a row written in the caller's own transaction.

The dual-write problem ("update the database, then publish": a crash between the two loses
the event; "publish, then commit": a rollback leaves an event about nothing) goes away when
the event is one more row in the same local transaction as the business change::

    with conn.transaction():
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", [order_id])
        outbox.add(conn, "orders", {"order": order_id, "status": "paid"}, key=str(order_id))

A :class:`~idemkit.patterns.relay.Relay` publishes committed rows to Redis Streams later.
Events of one ``key`` are published in commit order: on PostgreSQL :func:`add` takes a
transaction-scoped advisory lock on the key before drawing the row id, so two transactions
adding to one key get ids in the order they commit (SQLite has a single writer anyway).

:func:`setup` creates the table and its indexes; it is idempotent and safe to call at every
start. Payloads are JSON. Connections: ``sqlite3``, psycopg 3 sync, and psycopg 3 async
(``await outbox.add(aconn, ...)``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable
from typing import Any, Final, overload

from idemkit.lock import check_name
from idemkit.patterns._sql import (
    POSTGRES,
    AsyncExecutor,
    Dialect,
    SyncExecutor,
    dialect_of,
    ident,
    is_async,
)

__all__ = [
    "DEFAULT_STREAM_PREFIX",
    "DEFAULT_TABLE",
    "add",
    "encode_payload",
    "fence_table",
    "schema",
    "setup",
    "stream_name",
]

DEFAULT_TABLE: Final = "idemkit_outbox"
DEFAULT_STREAM_PREFIX: Final = "idemkit:outbox:"


def fence_table(table: str) -> str:
    """The table holding the newest relay fencing token of outbox ``table``."""
    return f"{ident(table)}_fence"


def stream_name(topic: str, *, prefix: str = DEFAULT_STREAM_PREFIX) -> str:
    """The Redis stream a topic is published to; the topic is its Cluster hash tag."""
    return f"{prefix}{{{check_name(topic, 'topic')}}}"


def encode_payload(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def schema(dialect: Dialect, table: str = DEFAULT_TABLE) -> list[str]:
    """The statements :func:`setup` runs (all ``IF NOT EXISTS``)."""
    t, f = ident(table), fence_table(table)
    if dialect == POSTGRES:
        return [
            f"""CREATE TABLE IF NOT EXISTS {t} (
                id BIGSERIAL PRIMARY KEY,
                event_id TEXT NOT NULL UNIQUE,
                topic TEXT NOT NULL,
                key TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                published_at TIMESTAMPTZ,
                published_by BIGINT)""",
            # The relay's scan: only unpublished rows, in id order; stays small.
            f"CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (id) WHERE published_at IS NULL",
            # Retention: delete published rows by age.
            f"CREATE INDEX IF NOT EXISTS {t}_published ON {t} (published_at) "
            "WHERE published_at IS NOT NULL",
            f"CREATE TABLE IF NOT EXISTS {f} (name TEXT PRIMARY KEY, fence_token BIGINT NOT NULL)",
        ]
    return [
        f"""CREATE TABLE IF NOT EXISTS {t} (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL,
            key TEXT NOT NULL,
            payload TEXT NOT NULL,
            created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
            published_at REAL,
            published_by INTEGER)""",
        f"CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (id) WHERE published_at IS NULL",
        f"CREATE INDEX IF NOT EXISTS {t}_published ON {t} (published_at) "
        "WHERE published_at IS NOT NULL",
        f"CREATE TABLE IF NOT EXISTS {f} (name TEXT PRIMARY KEY, fence_token INTEGER NOT NULL)",
    ]


def _setup_statements(conn: object, table: str) -> list[str]:
    dialect = dialect_of(conn)
    statements = schema(dialect, table)
    if dialect == POSTGRES:
        # Concurrent CREATE ... IF NOT EXISTS can still collide in the catalog: serialise.
        statements.insert(0, f"SELECT pg_advisory_xact_lock(hashtext('idemkit-setup-{table}'))")
    return statements


@overload
def setup(conn: AsyncExecutor, table: str = ...) -> Awaitable[None]: ...
@overload
def setup(conn: SyncExecutor, table: str = ...) -> None: ...
def setup(conn: Any, table: str = DEFAULT_TABLE) -> Awaitable[None] | None:
    """Create the outbox table, its indexes and its fence table, and commit.

    Idempotent: safe to run at every start, from several processes at once. Pass a
    connection (not a cursor) that is not inside a transaction of yours.
    """
    statements = _setup_statements(conn, table)
    if is_async(conn):
        return _setup_async(conn, statements)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    return None


async def _setup_async(conn: Any, statements: list[str]) -> None:
    for statement in statements:
        await conn.execute(statement)
    await conn.commit()


def _insert(
    conn: object, table: str, topic: str, payload: Any, key: str | None, event_id: str | None
) -> tuple[str, str, list[Any]]:
    dialect = dialect_of(conn)
    check_name(topic, "topic")
    event = event_id or str(uuid.uuid4())
    t = ident(table)
    values = [event, topic, event if key is None else key, encode_payload(payload)]
    columns = "event_id, topic, key, payload"
    if dialect == POSTGRES and key is not None:
        # The lock is taken before the SELECT yields its row, so before the id default is
        # drawn: per key, ids follow commit order and the relay never sees a later event of
        # the key committed before an earlier one.
        sql = (
            f"WITH ordered AS (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))) "
            f"INSERT INTO {t} ({columns}) SELECT %s, %s, %s, %s FROM ordered"
        )
        return event, sql, [f"{t}:{key}", *values]
    return event, f"INSERT INTO {t} ({columns}) VALUES ({dialect.marks(4)})", values


@overload
def add(
    conn: AsyncExecutor,
    topic: str,
    payload: Any,
    *,
    key: str | None = ...,
    table: str = ...,
    event_id: str | None = ...,
) -> Awaitable[str]: ...
@overload
def add(
    conn: SyncExecutor,
    topic: str,
    payload: Any,
    *,
    key: str | None = ...,
    table: str = ...,
    event_id: str | None = ...,
) -> str: ...
def add(
    conn: Any,
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    table: str = DEFAULT_TABLE,
    event_id: str | None = None,
) -> Awaitable[str] | str:
    """Write one event in the caller's open transaction and return its event id.

    Nothing is committed here: the event becomes visible to the relay exactly when the
    caller's transaction commits, and disappears with it on rollback. ``key`` orders events
    (per key, in commit order) and is what consumers partition on; without one the event
    has no ordering constraint. ``payload`` must be JSON-serialisable. ``event_id`` (default
    a fresh UUID) is the dedup id consumers see.
    """
    event, sql, params = _insert(conn, table, topic, payload, key, event_id)
    if is_async(conn):
        return _add_async(conn, sql, params, event)
    conn.execute(sql, params)
    return event


async def _add_async(conn: Any, sql: str, params: list[Any], event: str) -> str:
    await conn.execute(sql, params)
    return event
