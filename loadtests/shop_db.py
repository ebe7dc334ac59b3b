"""The shop's own database: its orders, their events, and the outbox, written together.

Every saga step that changes an order records what happened as an *event* in one local
transaction: the event row (numbered per order: ``seq``), the order's current state, and the
outbox row the relay publishes (:func:`idemkit.patterns.outbox.add`). So an event exists
exactly when the change committed, and the read model hears of every change once.

Each write is fenced by the saga's token (:mod:`idemkit.sql_fence`, a ``fence_token`` column
on the order): an orchestrator that was paused past its lease, while another took the saga
over, can record nothing any more. Recording is idempotent per ``(order, kind)``: a step
run again (same idempotency key, after a crash) finds its event and adds none.

PostgreSQL through psycopg 3 (``postgresql://...``) or SQLite (``sqlite:///path``, the
embedded demo). One connection per :class:`ShopDb`, used from one thread: the async shop
and orchestrators call it through :meth:`ShopDb.call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from idemkit.errors import ConfigurationError, StaleTokenError
from idemkit.patterns import outbox
from idemkit.sql_fence import fenced_upsert

__all__ = [
    "EVENT_KINDS",
    "ORDERS_TABLE",
    "TOPIC",
    "ShopDb",
    "connector",
    "event_id",
]

TOPIC: Final = "shop-orders"  # the outbox topic, published to stream idemkit:outbox:{shop-orders}
ORDERS_TABLE: Final = "shop_orders"
EVENTS_TABLE: Final = "shop_order_events"
EVENT_KINDS: Final = ("reserved", "charged", "confirmed", "refunded", "released")

T = TypeVar("T")


def connector(url: str) -> Callable[[], Any]:
    """A factory of new connections for ``postgresql://...`` or ``sqlite:///path``."""
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        return lambda: psycopg.connect(url)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return lambda: sqlite3.connect(path, timeout=30)
    raise ConfigurationError(
        f"the shop's database URL must start with postgresql:// or sqlite:///, got {url!r}"
    )


def event_id(order_id: str, kind: str) -> str:
    """The outbox event id of one change of one order: stable, so recording is idempotent."""
    return f"{order_id}:{kind}"


def _schema(postgres: bool) -> list[str]:
    token = "BIGINT" if postgres else "INTEGER"
    return [
        f"""CREATE TABLE IF NOT EXISTS {ORDERS_TABLE} (
            order_id TEXT PRIMARY KEY, product TEXT NOT NULL, qty INTEGER NOT NULL,
            amount INTEGER NOT NULL, status TEXT, seq INTEGER NOT NULL DEFAULT 0,
            fence_token {token} NOT NULL)""",
        f"""CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (
            order_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
            event_id TEXT NOT NULL, PRIMARY KEY (order_id, seq), UNIQUE (order_id, kind))""",
    ]


class ShopDb:
    """The shop's tables on one connection; see the module docstring."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connect = connector(url)
        self.postgres = not url.startswith("sqlite:")
        self._conn: Any = None
        # One thread owns the connection: sqlite3 and psycopg connections are not shared
        # between threads, and the saga steps of one process queue up here.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shop-db")

    # -- connection ---------------------------------------------------------------------------

    def _db(self) -> Any:
        if self._conn is None:
            conn = self.connect()
            if self.postgres:
                conn.autocommit = True  # transactions are explicit (conn.transaction())
            else:
                conn.isolation_level = None  # autocommit; writes take BEGIN IMMEDIATE
                conn.execute("PRAGMA journal_mode=WAL")
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        self._executor.submit(self._drop).result(timeout=10)
        self._executor.shutdown(wait=True)

    @property
    def mark(self) -> str:
        return "%s" if self.postgres else "?"

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self._db()
        try:
            if self.postgres:
                with conn.transaction():
                    yield conn
            else:
                # IMMEDIATE: take the write lock up front; a deferred transaction that reads
                # first can fail to upgrade when another process writes meanwhile.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except StaleTokenError:
            raise
        except Exception:
            self._drop()  # reconnect on the next call
            raise

    def run(self, fn: Callable[[ShopDb], T]) -> T:
        """Run ``fn(self)`` on the connection's thread and wait (sync callers)."""
        return self._executor.submit(fn, self).result()

    async def call(self, fn: Callable[[ShopDb], T]) -> T:
        """Run ``fn(self)`` on the connection's thread (async callers)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self)

    # -- writes -------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the outbox and the shop's tables (idempotent, safe from several processes)."""
        # A connection of its own, not in autocommit: the advisory locks that serialise
        # concurrent setups last until the commit.
        conn = self.connect()
        try:
            outbox.setup(conn)
            if self.postgres:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('idemkit-shop-setup'))")
            for statement in _schema(self.postgres):
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()

    def record(
        self,
        order: Mapping[str, Any],
        kind: str,
        token: int,
        *,
        after: str | None = None,
    ) -> int | None:
        """Record event ``kind`` of ``order`` (its saga data) under saga token ``token``.

        Returns the event's number within the order (the existing one if it was recorded
        before), or None when ``after`` names an event the order does not have (a release
        of a reservation that was never recorded). Raises :class:`StaleTokenError` when a
        newer orchestrator has written this order.
        """
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown order event {kind!r}")
        order_id = str(order["order_id"])
        m = self.mark
        with self._transaction() as tx:
            cur = tx.cursor()
            try:
                # First, so the row lock serialises every writer of this order from here on.
                values = {k: order[k] for k in ("product", "qty", "amount")}
                if not fenced_upsert(
                    cur,
                    ORDERS_TABLE,
                    {"order_id": order_id},
                    values,
                    token,
                    paramstyle="format" if self.postgres else "qmark",
                ):
                    raise StaleTokenError(
                        f"order {order_id} was taken over by a newer orchestrator than token "
                        f"{token}",
                        token=token,
                        newest=token,
                    )
                kinds = dict(
                    cur.execute(
                        f"SELECT kind, seq FROM {EVENTS_TABLE} WHERE order_id = {m}", [order_id]
                    ).fetchall()
                )
                if kind in kinds:
                    return int(kinds[kind])
                if after is not None and after not in kinds:
                    return None
                seq = max(kinds.values(), default=0) + 1
                event = event_id(order_id, kind)
                cur.execute(
                    f"INSERT INTO {EVENTS_TABLE} (order_id, seq, kind, event_id) "
                    f"VALUES ({m}, {m}, {m}, {m})",
                    [order_id, seq, kind, event],
                )
                cur.execute(
                    f"UPDATE {ORDERS_TABLE} SET status = {m}, seq = {m} WHERE order_id = {m}",
                    [kind, seq, order_id],
                )
                payload = {
                    "order": order_id,
                    "seq": seq,
                    "kind": kind,
                    "product": order["product"],
                    "qty": order["qty"],
                    "amount": order["amount"],
                }
                outbox.add(tx, TOPIC, payload, key=order_id, event_id=event)
                return seq
            finally:
                cur.close()

    # -- reads (for the audit) ----------------------------------------------------------------

    def orders(self) -> dict[str, dict[str, Any]]:
        rows = self._db().execute(
            f"SELECT order_id, product, qty, amount, status, seq FROM {ORDERS_TABLE}"
        )
        return {
            r[0]: {"product": r[1], "qty": int(r[2]), "amount": int(r[3]), "status": r[4]}
            for r in rows.fetchall()
        }

    def events(self) -> dict[str, list[dict[str, Any]]]:
        """Every order's events in seq order, with their outbox row (id, published?)."""
        rows = self._db().execute(
            f"SELECT e.order_id, e.seq, e.kind, e.event_id, o.id, o.published_at "
            f"FROM {EVENTS_TABLE} e LEFT JOIN {outbox.DEFAULT_TABLE} o "
            "ON o.event_id = e.event_id ORDER BY e.order_id, e.seq"
        )
        out: dict[str, list[dict[str, Any]]] = {}
        for order_id, seq, kind, event, outbox_id, published in rows.fetchall():
            out.setdefault(order_id, []).append(
                {
                    "seq": int(seq),
                    "kind": kind,
                    "event_id": event,
                    "outbox_id": None if outbox_id is None else int(outbox_id),
                    "published": published is not None,
                }
            )
        return out

    def unpublished(self) -> int:
        rows = self._db().execute(
            f"SELECT count(*) FROM {outbox.DEFAULT_TABLE} WHERE published_at IS NULL"
        )
        return int(rows.fetchone()[0])
