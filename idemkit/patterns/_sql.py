"""What differs between the two SQL stores the patterns support: PostgreSQL through psycopg 3
(sync and async) and SQLite through the standard library (the embedded demo)."""

from __future__ import annotations

import inspect
import re
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from idemkit.errors import ConfigurationError
from idemkit.patterns.errors import UnsupportedConnectionError
from idemkit.sql_fence import ParamStyle

__all__ = [
    "POSTGRES",
    "SQLITE",
    "AsyncExecutor",
    "Dialect",
    "SyncExecutor",
    "connector",
    "dialect_of",
    "ident",
    "is_async",
]

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}")


class SyncExecutor(Protocol):
    """A DB-API connection or cursor (``sqlite3``, ``psycopg.Connection``/``Cursor``)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


class AsyncExecutor(Protocol):
    """A ``psycopg.AsyncConnection`` or ``AsyncCursor``."""

    def execute(self, query: Any, params: Any = ..., /) -> Awaitable[Any]: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: Literal["postgres", "sqlite"]
    paramstyle: ParamStyle

    @property
    def mark(self) -> str:
        return "%s" if self.paramstyle == "format" else "?"

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


POSTGRES: Final = Dialect("postgres", "format")
SQLITE: Final = Dialect("sqlite", "qmark")


def dialect_of(conn: object) -> Dialect:
    """The dialect of a sqlite3 or psycopg 3 connection or cursor."""
    module = type(conn).__module__
    if isinstance(conn, sqlite3.Connection | sqlite3.Cursor):
        return SQLITE
    if module.startswith("psycopg"):
        return POSTGRES
    raise UnsupportedConnectionError(
        f"unsupported connection {type(conn).__qualname__} from {module!r}: pass a sqlite3 "
        "connection or a psycopg 3 connection (sync or async) or cursor"
    )


def is_async(conn: object) -> bool:
    return inspect.iscoroutinefunction(getattr(conn, "execute", None))


def ident(name: str, what: str = "table") -> str:
    """``name`` if it is a plain SQL identifier (identifiers cannot be bound parameters)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(
            f"{what} name must be a plain SQL identifier of at most 51 characters, got {name!r}"
        )
    return name


def connector(url: str) -> Callable[[], Any]:
    """A connection factory for ``postgresql://...`` (psycopg) or ``sqlite:///path``."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        return lambda: psycopg.connect(url)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return lambda: sqlite3.connect(path, timeout=30)
    raise ConfigurationError(
        f"database URL must start with postgresql:// or sqlite:///, got {url.split(':')[0]!r}"
    )
