"""Fencing for SQL stores: a token column and a conditional write.

The pattern needs no library: keep a ``fence_token`` column on the fenced row and make every
write conditional on it, so the database refuses a write whose token is older than the
newest one the row has seen::

    INSERT INTO jobs (id, state, fence_token) VALUES (?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET state = excluded.state, fence_token = excluded.fence_token
    WHERE jobs.fence_token <= excluded.fence_token

The ``WHERE`` of ``ON CONFLICT DO UPDATE`` (and of a plain ``UPDATE``) is evaluated on the
latest row version under the row lock, so the check and the write are one atomic step in
PostgreSQL and SQLite (3.24+). A row count of 0 means the token was stale: stop, do not retry.
These helpers build that statement from validated identifiers and run it on any DB-API cursor.

Tokens are compared by the database as integers, so exactly, but an ``INTEGER``/``BIGINT``
column holds signed 64-bit values: the helpers refuse tokens above ``2**63 - 1``
(:data:`MAX_SQL_TOKEN`) with a :class:`~idemkit.errors.ConfigurationError` before touching the
database, instead of letting a driver fail with an overflow, or worse, convert the token to a
floating-point value (SQLite compares an out-of-range integer as a REAL, i.e. inexactly).
Tokens of :class:`~idemkit.lock.FencedLock` are microseconds, far below that limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, Protocol

from idemkit.errors import ConfigurationError

__all__ = [
    "MAX_SQL_TOKEN",
    "Cursor",
    "ParamStyle",
    "fenced_update",
    "fenced_update_sql",
    "fenced_upsert",
    "fenced_upsert_sql",
]

ParamStyle = Literal["qmark", "format"]
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# The largest value of a SQL INTEGER (SQLite) or BIGINT (PostgreSQL, MySQL) column.
MAX_SQL_TOKEN: Final = 2**63 - 1


class Cursor(Protocol):
    """The part of a DB-API 2.0 cursor the helpers use (sqlite3, psycopg, ...)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...


def _ident(name: str) -> str:
    # Identifiers cannot be bound as parameters: allow only plain names so no caller input
    # can inject SQL through a column or table name.
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(f"not a plain SQL identifier: {name!r}")
    return name


def _token(token: object) -> int:
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise ConfigurationError(f"a fencing token is an int >= 0, got {token!r}")
    if token > MAX_SQL_TOKEN:
        raise ConfigurationError(
            f"fencing token {token} does not fit a signed 64-bit SQL integer column (at most "
            f"2**63 - 1); compare larger tokens in a NUMERIC column with your own statement"
        )
    return token


def _marks(style: ParamStyle, count: int) -> list[str]:
    if style not in ("qmark", "format"):
        raise ConfigurationError(f"paramstyle must be 'qmark' or 'format', got {style!r}")
    return ["?" if style == "qmark" else "%s"] * count


def fenced_upsert_sql(
    table: str,
    key_columns: Sequence[str],
    value_columns: Sequence[str],
    *,
    token_column: str = "fence_token",
    paramstyle: ParamStyle = "qmark",
) -> str:
    """``INSERT ... ON CONFLICT DO UPDATE ... WHERE token <= new token``.

    Parameters, in order: the key columns, the value columns, then the token.
    """
    if not key_columns:
        raise ConfigurationError("a fenced upsert needs at least one key column")
    t, tok = _ident(table), _ident(token_column)
    keys = [_ident(c) for c in key_columns]
    values = [_ident(c) for c in value_columns]
    columns = [*keys, *values, tok]
    sets = ", ".join(f"{c} = excluded.{c}" for c in [*values, tok])
    return (
        f"INSERT INTO {t} ({', '.join(columns)}) "
        f"VALUES ({', '.join(_marks(paramstyle, len(columns)))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets} "
        f"WHERE {t}.{tok} <= excluded.{tok}"
    )


def fenced_update_sql(
    table: str,
    key_columns: Sequence[str],
    value_columns: Sequence[str],
    *,
    token_column: str = "fence_token",
    paramstyle: ParamStyle = "qmark",
) -> str:
    """``UPDATE ... SET ..., token = new WHERE key = ... AND token <= new``.

    Parameters, in order: the value columns, the token, the key columns, the token again.
    """
    if not key_columns:
        raise ConfigurationError("a fenced update needs at least one key column")
    t, tok = _ident(table), _ident(token_column)
    mark = _marks(paramstyle, 1)[0]
    sets = ", ".join(f"{_ident(c)} = {mark}" for c in [*value_columns, tok])
    where = " AND ".join(f"{_ident(c)} = {mark}" for c in key_columns)
    return f"UPDATE {t} SET {sets} WHERE {where} AND {tok} <= {mark}"


def fenced_upsert(
    cursor: Cursor,
    table: str,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    token: int,
    *,
    token_column: str = "fence_token",
    paramstyle: ParamStyle = "qmark",
) -> bool:
    """Insert or update one row if ``token`` is not stale; True if written.

    The caller owns the transaction (commit afterwards). False means a newer token has
    written the row: the lock behind ``token`` was lost.
    """
    token = _token(token)
    sql = fenced_upsert_sql(
        table, list(key), list(values), token_column=token_column, paramstyle=paramstyle
    )
    cursor.execute(sql, [*key.values(), *values.values(), token])
    return cursor.rowcount == 1


def fenced_update(
    cursor: Cursor,
    table: str,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    token: int,
    *,
    token_column: str = "fence_token",
    paramstyle: ParamStyle = "qmark",
) -> bool:
    """Update an existing row if ``token`` is not stale; True if written (see fenced_upsert)."""
    token = _token(token)
    sql = fenced_update_sql(
        table, list(key), list(values), token_column=token_column, paramstyle=paramstyle
    )
    cursor.execute(sql, [*values.values(), token, *key.values(), token])
    return cursor.rowcount == 1
