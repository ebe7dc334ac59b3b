"""Apply a side effect once per dedup id, however often the message or task is delivered.

Message brokers deliver at least once: a consumer that crashes after its side effect and
before its ``XACK`` (or a Celery worker killed before the ack) gets the message again. What
makes the *effect* happen once depends on where it lands:

* :class:`RedisEffect`: the handler queues Redis commands on a ``MULTI`` pipeline; they
  run in one ``EXEC`` together with the dedup marker, watched so a concurrent duplicate
  applies nothing. Exactly once, whatever crashes where.
* :class:`SqlEffect`: the handler writes through the given connection; the dedup row is
  inserted in the same transaction (a concurrent duplicate waits on its unique key and
  then finds it). Exactly once for everything the handler writes in that transaction.
* :class:`LeasedEffect`: any side effect, guarded by an idempotency record of
  :class:`~idemkit.lease.SyncLeaseStore`: claimed before the handler runs, completed with
  its result after. Duplicates after completion replay the result; a duplicate while it
  runs is told ``busy``. Only a crash *between* the side effect and the completion can
  run it twice, so pass ``ctx.idempotency_key`` on to the service you call (an HTTP
  ``Idempotency-Key``) and ``ctx.token`` to a fence to close that gap too.

``apply(dedup_id, call)`` runs ``call(ctx)`` at most once per dedup id in effect and returns
an :class:`Applied`; the consumer and the Celery decorator are built on it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar, cast

import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline
from redis.exceptions import RedisError, WatchError

from idemkit.codec import pack_result, unpack_result
from idemkit.errors import ConfigurationError, StoreUnavailableError
from idemkit.lease import BUSY, CLAIMED, COMPLETED, SyncLeaseStore
from idemkit.patterns._sql import POSTGRES, dialect_of, ident
from idemkit.values import MsgpackSerializer

__all__ = [
    "Applied",
    "Effect",
    "EffectContext",
    "LeasedEffect",
    "RedisEffect",
    "SqlEffect",
]

log = logging.getLogger("idemkit.patterns.effects")
_RESULTS = MsgpackSerializer()

CtxT_co = TypeVar("CtxT_co", covariant=True)
DEFAULT_TTL_S: Final = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`Effect.apply` did: ``"applied"`` (ran now), ``"duplicate"`` (ran before;
    ``result`` is the stored result where the effect keeps one) or ``"busy"`` (running
    elsewhere right now: try again later)."""

    outcome: Literal["applied", "duplicate", "busy"]
    result: Any = None


class Effect(Protocol[CtxT_co]):
    """Runs ``call(ctx)`` once per ``dedup_id`` in effect."""

    def apply(self, dedup_id: str, call: Callable[[CtxT_co], Any]) -> Applied: ...


@dataclass(frozen=True, slots=True)
class EffectContext:
    """Given to :class:`LeasedEffect` handlers: pass both on to what you call."""

    dedup_id: str
    idempotency_key: str
    token: int


def _check_id(dedup_id: object) -> str:
    if not isinstance(dedup_id, str) or not dedup_id:
        raise ConfigurationError(f"a dedup id is a non-empty string, got {dedup_id!r}")
    return dedup_id


class RedisEffect:
    """Side effects in Redis, applied in one ``MULTI``/``EXEC`` with the dedup marker.

    ``call(pipe)`` queues commands on ``pipe`` (it cannot read their replies). The marker
    ``<prefix><dedup_id>`` lives ``ttl_s`` seconds: duplicates arriving later than that are
    applied again, so keep it longer than redelivery can happen. On Redis Cluster the
    handler's keys and the marker must share one hash tag (put one in ``prefix``).
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        *,
        prefix: str = "idemkit:applied:",
        ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def marker(self, dedup_id: str) -> str:
        return f"{self.prefix}{_check_id(dedup_id)}"

    def apply(self, dedup_id: str, call: Callable[[Pipeline], Any]) -> Applied:
        marker = self.marker(dedup_id)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        pipe.watch(marker)
                        stored = pipe.get(marker)
                        if stored is not None:
                            value = unpack_result(cast(bytes, stored), _RESULTS, dedup_id)
                            return Applied("duplicate", value)
                        pipe.multi()
                        result = call(pipe)
                        if isinstance(result, Pipeline | ClusterPipeline):
                            result = None  # a handler ending in `return pipe.incr(...)`
                        pipe.set(marker, pack_result(result, _RESULTS)[0], ex=self.ttl_s)
                        pipe.execute()
                        return Applied("applied", result)
                    except WatchError:
                        continue  # a duplicate applied meanwhile: the marker now says so
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis effect failed: {exc}") from exc


class SqlEffect:
    """Side effects in a SQL database, committed with a dedup row in one transaction.

    ``connect`` returns a sqlite3 or psycopg 3 (sync) connection; ``call(conn)`` writes
    through it and must not commit. The dedup table is created on first use.
    """

    def __init__(self, connect: Callable[[], Any], *, table: str = "idemkit_applied") -> None:
        self.connect = connect
        self.table = ident(table)
        self._conn: Any = None

    def _db(self) -> Any:
        if self._conn is None:
            conn = self.connect()
            dialect = dialect_of(conn)
            created = "TIMESTAMPTZ NOT NULL DEFAULT now()" if dialect == POSTGRES else "REAL"
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} "
                f"(dedup_id TEXT PRIMARY KEY, applied_at {created})"
            )
            conn.commit()
            self._conn = conn
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def apply(self, dedup_id: str, call: Callable[[Any], Any]) -> Applied:
        conn = self._db()
        mark = dialect_of(conn).mark
        try:
            cur = conn.execute(
                f"INSERT INTO {self.table} (dedup_id) VALUES ({mark}) ON CONFLICT DO NOTHING",
                [_check_id(dedup_id)],
            )
            if cur.rowcount == 0:
                conn.rollback()
                return Applied("duplicate")
            result = call(conn)
            conn.commit()
            return Applied("applied", result)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.rollback()
            if isinstance(exc, sqlite3.Error) or type(exc).__module__.startswith("psycopg"):
                self.close()  # reconnect on the next call
            raise


class LeasedEffect:
    """Any side effect, guarded by a fenced idempotency record (claim, run, complete).

    ``call(ctx)`` gets an :class:`EffectContext`; its result (msgpack-encodable) is stored
    for ``ttl_ms`` and returned to duplicates. ``lease_ms`` must exceed the handler's run
    time: a duplicate arriving after the lease may run it again.
    """

    def __init__(
        self,
        store: SyncLeaseStore | redis.Redis | redis.RedisCluster,
        *,
        namespace: str = "effect",
        lease_ms: int = 60_000,
        ttl_ms: int = DEFAULT_TTL_S * 1000,
    ) -> None:
        self.store = store if isinstance(store, SyncLeaseStore) else SyncLeaseStore(store)
        self.namespace = namespace
        self.lease_ms = lease_ms
        self.ttl_ms = ttl_ms

    def record(self, dedup_id: str) -> str:
        # Hashed: dedup ids may hold braces or be long; the record name must be a safe tag.
        digest = hashlib.blake2b(_check_id(dedup_id).encode(), digest_size=16).hexdigest()
        return self.store.record_key(f"{self.namespace}:{digest}")

    def apply(self, dedup_id: str, call: Callable[[EffectContext], Any]) -> Applied:
        record = self.record(dedup_id)
        claim = self.store.claim(record, b"", self.lease_ms, self.ttl_ms)
        if claim.outcome == COMPLETED:
            return Applied("duplicate", unpack_result(claim.result or b"", _RESULTS, dedup_id))
        if claim.outcome == BUSY:
            return Applied("busy")
        if claim.outcome != CLAIMED:  # pragma: no cover - '' fingerprints always match
            raise StoreUnavailableError(f"unexpected claim outcome {claim.outcome}")
        try:
            result = call(EffectContext(dedup_id, f"{self.namespace}:{dedup_id}", claim.token))
        except BaseException:
            with contextlib.suppress(StoreUnavailableError):
                self.store.release(record, claim.token)
            raise
        data, _ = pack_result(result, _RESULTS)  # once the effect ran, never release it
        if not self.store.complete(record, claim.token, data, self.ttl_ms):
            log.warning(
                "idemkit: effect lease lapsed before completion; a duplicate may have run it"
            )
        return Applied("applied", result)
