"""The outbox relay: publish committed outbox rows to Redis Streams, then mark them.

Exactly one relay is active per outbox table: it holds a :class:`~idemkit.lock.SyncFencedLock`
(renewed by a watchdog) and its fencing token guards both of its writes.

* Publishing: a batch of one stream is appended by one Lua script that first checks the
  stream's fence key, so once a newer relay has published to a stream an old one cannot
  append to it any more (no re-ordering behind the new relay's back).
* Marking: the ``UPDATE ... SET published_at`` runs in one SQL transaction with a fenced
  update of the outbox's fence row (:mod:`idemkit.sql_fence`), and the new relay writes its
  token there as soon as it takes over. A relay paused past its lease therefore marks
  nothing after the takeover: its transaction matches no fence row and is rolled back.

A relay that crashes between publishing and marking leaves rows that the next relay
publishes again: consumers see the same ``event_id`` twice and drop the copy (see
:mod:`idemkit.patterns.consumer`). Delivery is at least once; the effect is once.

Errors back off exponentially (with jitter) and reconnect; published rows older than
``retention_s`` are deleted in bounded chunks. Events (``outbox.publish``, ``outbox.mark``,
``outbox.lease``, ``outbox.cleanup``, ``outbox.error``) go to ``observer``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import redis
from redis.exceptions import RedisError

from idemkit.errors import (
    ConfigurationError,
    LeaseLostError,
    LockNotHeldError,
    LockTimeoutError,
    StaleTokenError,
    StoreUnavailableError,
)
from idemkit.lock import SyncFencedLock
from idemkit.observe import Event, Observer, Stopwatch, emit
from idemkit.patterns._sql import POSTGRES, dialect_of, ident
from idemkit.patterns.outbox import DEFAULT_STREAM_PREFIX, DEFAULT_TABLE, fence_table
from idemkit.sql_fence import fenced_update, fenced_upsert

__all__ = ["OutboxRow", "Relay", "load_script"]

log = logging.getLogger("idemkit.patterns.relay")

_CLEANUP_CHUNK: Final = 1000


def load_script(name: str) -> str:
    """Source of a Lua script shipped with the patterns (``idemkit/patterns/lua/``)."""
    return resources.files("idemkit.patterns").joinpath("lua", f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: str
    topic: str
    key: str
    payload: str


def _db_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is optional
        pass
    else:
        errors.append(psycopg.Error)
    return tuple(errors)


class Relay:
    """Publishes one outbox table to Redis Streams; see the module docstring.

    ``connect`` returns a new DB connection (sqlite3 or psycopg 3 sync) and is called again
    after a database error. Run it with :meth:`run` (until ``stop`` is set) in its own process
    or thread, e.g. ``python -m idemkit.patterns relay``; :meth:`publish_once` does one batch.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        client: redis.Redis | redis.RedisCluster,
        *,
        table: str = DEFAULT_TABLE,
        batch_size: int = 100,
        lease_ms: int = 10_000,
        poll_interval: float = 0.1,
        stream_prefix: str = DEFAULT_STREAM_PREFIX,
        maxlen: int | None = None,
        retention_s: float = 7 * 24 * 3600,
        cleanup_interval_s: float = 60.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        observer: Observer | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1, got {batch_size!r}")
        if poll_interval <= 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ConfigurationError("poll_interval and backoffs must be > 0, max >= initial")
        if retention_s < 0:
            raise ConfigurationError(f"retention_s must be >= 0, got {retention_s!r}")
        self.table = ident(table)
        self.fence_table = fence_table(table)
        self.connect = connect
        self.client = client
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.stream_prefix = stream_prefix
        self.maxlen = maxlen or 0
        self.retention_s = retention_s
        self.cleanup_interval_s = cleanup_interval_s
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.observer = observer
        self.lease_ms = lease_ms
        self.lock = self._new_lock()
        self._publish = client.register_script(load_script("outbox_publish"))
        self._conn: Any = None
        self._retry_errors: tuple[type[BaseException], ...] = (
            StoreUnavailableError,
            RedisError,
            OSError,
            *_db_errors(),
        )
        self._next_cleanup = 0.0

    # -- connection ---------------------------------------------------------------------------

    def _db(self) -> Any:
        if self._conn is None:
            self._conn = self.connect()
            dialect_of(self._conn)
        return self._conn

    def _drop_db(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Give up the lease (if held) and the DB connection."""
        with contextlib.suppress(LockNotHeldError, LeaseLostError, StoreUnavailableError):
            self.lock.release()
        self._drop_db()

    # -- the lease and its fence --------------------------------------------------------------

    def _take_over(self, timeout: float) -> bool:
        """Acquire the lease and write its token to the SQL fence row at once, so a relay
        that held the lease before can mark nothing from now on."""
        try:
            token = self.lock.acquire(timeout=timeout)
        except LockTimeoutError:
            return False
        try:
            self._claim_fence(token)
        except BaseException:
            # Without its token in the fence row this relay must not publish: start over.
            self._lost_quietly()
            raise
        emit(self.observer, Event("outbox.lease", "acquired", attrs={"token": token}))
        return True

    def _claim_fence(self, token: int) -> None:
        conn = self._db()
        dialect = dialect_of(conn)
        cur = conn.cursor()
        try:
            ok = fenced_upsert(
                cur,
                self.fence_table,
                {"name": self.table},
                {},
                token,
                paramstyle=dialect.paramstyle,
            )
            if not ok:
                conn.rollback()
                raise StaleTokenError(
                    f"outbox {self.table!r} has seen a newer relay token than {token}",
                    token=token,
                    newest=token,
                )
            conn.commit()
        finally:
            cur.close()

    def _drop_stale_grant(self) -> None:
        """A grant the watchdog lost (or that ran out) blocks a new acquire on this handle."""
        try:
            self.lock.ensure_held()
        except LockNotHeldError:
            return  # nothing held: free to acquire
        except LeaseLostError as exc:
            self._lost(exc)

    def _lost_quietly(self) -> None:
        with contextlib.suppress(LockNotHeldError, LeaseLostError, StoreUnavailableError):
            self.lock.release()
        self.lock = self._new_lock()

    def _new_lock(self) -> SyncFencedLock:
        return SyncFencedLock(
            self.client,
            f"outbox:{self.table}",
            lease_ms=self.lease_ms,
            watchdog=True,
            poll_interval=0.05,
        )

    def _lost(self, error: Exception) -> None:
        log.warning("idemkit: outbox relay for %r stopped publishing: %s", self.table, error)
        emit(self.observer, Event("outbox.lease", "lost", attrs={"error": type(error).__name__}))
        # Stop the watchdog and drop the grant; a fresh handle competes for the lease again.
        self._lost_quietly()

    # -- one batch ----------------------------------------------------------------------------

    def _pending(self, conn: Any) -> list[OutboxRow]:
        dialect = dialect_of(conn)
        cur = conn.execute(
            f"SELECT id, event_id, topic, key, payload FROM {self.table} "
            f"WHERE published_at IS NULL ORDER BY id LIMIT {dialect.mark}",
            [self.batch_size],
        )
        rows = [OutboxRow(int(r[0]), r[1], r[2], r[3], r[4]) for r in cur.fetchall()]
        conn.commit()  # end the read transaction: no snapshot held while publishing
        return rows

    def _append(self, token: int, stream: str, rows: Sequence[OutboxRow]) -> None:
        args: list[Any] = [token, self.maxlen]
        for row in rows:
            args.extend((row.event_id, row.key, row.payload, row.id, row.topic))
        try:
            reply = self._publish(keys=[stream, f"{stream}:fence"], args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis publish failed: {exc}") from exc
        if int(reply[0]) == 0:
            newest = int(reply[1])
            raise StaleTokenError(
                f"stream {stream!r} refused relay token {token}: token {newest} is newer; "
                "another relay took over",
                token=token,
                newest=newest,
            )

    def _mark(self, conn: Any, token: int, ids: Sequence[int]) -> None:
        dialect = dialect_of(conn)
        cur = conn.cursor()
        try:
            if not fenced_update(
                cur,
                self.fence_table,
                {"name": self.table},
                {},
                token,
                paramstyle=dialect.paramstyle,
            ):
                conn.rollback()
                raise StaleTokenError(
                    f"outbox {self.table!r} refused relay token {token}: a newer relay took over",
                    token=token,
                    newest=token,
                )
            if dialect == POSTGRES:
                cur.execute(
                    f"UPDATE {self.table} SET published_at = now(), published_by = %s "
                    "WHERE id = ANY(%s) AND published_at IS NULL",
                    [token, list(ids)],
                )
            else:
                cur.execute(
                    f"UPDATE {self.table} SET published_at = ?, published_by = ? "
                    f"WHERE id IN ({dialect.marks(len(ids))}) AND published_at IS NULL",
                    [time.time(), token, *ids],
                )
            conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                conn.rollback()
            raise
        finally:
            cur.close()

    def publish_once(self) -> int:
        """Publish and mark one batch under the held lease; the number of events published.

        Raises :class:`LeaseLostError` or :class:`StaleTokenError` when this relay is no
        longer the active one (nothing was marked then).
        """
        token = self.lock.token
        conn = self._db()
        rows = self._pending(conn)
        if not rows:
            return 0
        watch = Stopwatch()
        streams = [
            (topic, list(group))
            for topic, group in itertools.groupby(
                sorted(rows, key=lambda r: (r.topic, r.id)), key=lambda r: r.topic
            )
        ]
        published: list[int] = []
        try:
            for topic, group in streams:
                self._append(token, f"{self.stream_prefix}{{{topic}}}", group)
                published.extend(row.id for row in group)
        finally:
            if published:
                # The observer runs between the append and the mark; fault tests stop the
                # process right here.
                emit(
                    self.observer,
                    watch.event("outbox.publish", "ok", attrs={"count": len(published)}),
                )
                self.lock.ensure_held()
                self._mark(conn, token, published)
                emit(self.observer, Event("outbox.mark", "ok", attrs={"count": len(published)}))
        return len(published)

    def cleanup(self) -> int:
        """Delete published rows older than ``retention_s`` (at most 1000 per call)."""
        conn = self._db()
        dialect = dialect_of(conn)
        if dialect == POSTGRES:
            sql = (
                f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table} "
                "WHERE published_at < now() - %s * interval '1 second' ORDER BY id LIMIT %s)"
            )
            params: list[Any] = [self.retention_s, _CLEANUP_CHUNK]
        else:
            sql = (
                f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM {self.table} "
                "WHERE published_at < ? ORDER BY id LIMIT ?)"
            )
            params = [time.time() - self.retention_s, _CLEANUP_CHUNK]
        cur = conn.execute(sql, params)
        deleted = int(cur.rowcount)
        conn.commit()
        emit(self.observer, Event("outbox.cleanup", "ok", attrs={"deleted": deleted}))
        return deleted

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, *, max_seconds: float | None = None) -> None:
        """Take the lease when it is free and publish until ``stop`` is set."""
        stop = stop or threading.Event()
        end = None if max_seconds is None else time.monotonic() + max_seconds
        backoff = self.backoff_initial
        try:
            while not stop.is_set() and (end is None or time.monotonic() < end):
                try:
                    if not self.lock.held:
                        self._drop_stale_grant()
                        if not self._take_over(timeout=self.poll_interval):
                            continue
                    published = self.publish_once()
                    backoff = self.backoff_initial
                    if published < self.batch_size:
                        if time.monotonic() >= self._next_cleanup:
                            self._next_cleanup = time.monotonic() + self.cleanup_interval_s
                            while self.cleanup() == _CLEANUP_CHUNK and not stop.is_set():
                                pass
                        stop.wait(self.poll_interval)
                except (LeaseLostError, StaleTokenError) as exc:
                    self._lost(exc)
                except self._retry_errors as exc:
                    log.warning("idemkit: outbox relay error, backing off %.2fs: %s", backoff, exc)
                    emit(
                        self.observer,
                        Event("outbox.error", type(exc).__name__, attrs={"backoff": backoff}),
                    )
                    self._drop_db()
                    stop.wait(random.uniform(backoff / 2, backoff))
                    backoff = min(backoff * 2, self.backoff_max)
        finally:
            self.close()
