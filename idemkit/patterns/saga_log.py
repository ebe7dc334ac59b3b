"""The persisted saga log: where a saga is, so another process can resume or compensate it.

One record per saga, written only through the orchestrator's fencing token: a
:class:`RedisSagaLog` record is a fenced hash (:class:`~idemkit.fence.Fence`), so after a
new orchestrator has read the record with its newer token, the old one's writes are refused
(:class:`~idemkit.errors.StaleTokenError`) and it cannot move the saga any more.

:class:`PostgresSagaLog` keeps the same records as rows with a ``fence_token`` column and
fenced upserts (:mod:`idemkit.sql_fence`). Unfinished sagas are listed in an index (a
sorted set; the table itself for PostgreSQL) that
:meth:`~idemkit.patterns.saga.SagaOrchestrator.recover` scans; parked sagas (a compensation
that keeps failing) in another, and their records never expire. Finished records expire
after ``retention_ms``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from idemkit.errors import StaleTokenError, StoreUnavailableError
from idemkit.fence import Fence
from idemkit.patterns._sql import ident
from idemkit.sql_fence import fenced_upsert_sql

__all__ = [
    "FINISHED",
    "PostgresSagaLog",
    "RedisSagaLog",
    "SagaLog",
    "SagaRecord",
    "SagaStatus",
]

SagaStatus = Literal["running", "compensating", "completed", "compensated", "parked"]
FINISHED: Final[frozenset[str]] = frozenset({"completed", "compensated"})
DEFAULT_SAGA_PREFIX: Final = "idemkit:saga:"


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """A saga's state. ``next`` is the index of the next action (``running``) or of the next
    step to compensate (``compensating``; -1 when none is left)."""

    saga_id: str
    name: str
    data: Any
    status: SagaStatus = "running"
    next: int = 0
    results: dict[str, Any] = field(default_factory=dict)
    failed_step: str | None = None
    error: str | None = None
    parked_step: str | None = None

    def but(self, **changes: Any) -> SagaRecord:
        return replace(self, **changes)

    def to_fields(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "data": json.dumps(self.data, separators=(",", ":")),
            "status": self.status,
            "next": self.next,
            "results": json.dumps(self.results, separators=(",", ":")),
            "failed_step": self.failed_step or "",
            "error": self.error or "",
            "parked_step": self.parked_step or "",
            "updated_ms": int(time.time() * 1000),
        }

    @classmethod
    def from_fields(cls, saga_id: str, fields: dict[str, bytes]) -> SagaRecord:
        def text(name: str) -> str:
            return fields.get(name, b"").decode()

        return cls(
            saga_id=saga_id,
            name=text("name"),
            data=json.loads(text("data") or "null"),
            status=text("status") or "running",  # type: ignore[arg-type]
            next=int(text("next") or 0),
            results=json.loads(text("results") or "{}"),
            failed_step=text("failed_step") or None,
            error=text("error") or None,
            parked_step=text("parked_step") or None,
        )


class SagaLog(Protocol):
    """Where saga records live. Reads and writes under a token are fenced."""

    async def load(self, saga_id: str, token: int) -> SagaRecord | None: ...
    async def save(self, record: SagaRecord, token: int) -> None: ...
    async def peek(self, saga_id: str) -> SagaRecord | None: ...
    async def track(self, saga_id: str) -> None: ...
    async def settle(self, record: SagaRecord) -> None: ...
    async def unfinished(self, limit: int) -> list[str]: ...
    async def parked(self, limit: int) -> list[str]: ...


class RedisSagaLog:
    """Saga records as fenced Redis hashes ``<prefix>{<saga id>}``."""

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        prefix: str = DEFAULT_SAGA_PREFIX,
        retention_ms: int = 7 * 24 * 3600 * 1000,
    ) -> None:
        self.client = client
        self.fence = Fence(client, prefix=prefix)
        self.retention_ms = retention_ms
        self.active_key = f"{prefix}index:unfinished"
        self.parked_key = f"{prefix}index:parked"

    async def load(self, saga_id: str, token: int) -> SagaRecord | None:
        fields = await self.fence.read(saga_id, token)
        fields.pop("_fence", None)
        return SagaRecord.from_fields(saga_id, fields) if fields.get("name") else None

    async def save(self, record: SagaRecord, token: int) -> None:
        await self.fence.write(record.saga_id, token, record.to_fields())

    async def peek(self, saga_id: str) -> SagaRecord | None:
        try:
            raw = await self.client.hgetall(self.fence.key(saga_id))
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis read failed: {exc}") from exc
        fields = {
            (k.decode() if isinstance(k, bytes) else k): (v if isinstance(v, bytes) else v.encode())
            for k, v in raw.items()
        }
        return SagaRecord.from_fields(saga_id, fields) if fields.get("name") else None

    async def track(self, saga_id: str) -> None:
        try:
            await self.client.zadd(self.active_key, {saga_id: time.time()}, nx=True)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis write failed: {exc}") from exc

    async def settle(self, record: SagaRecord) -> None:
        """Index upkeep after a final state: finished records expire, parked ones stay."""
        try:
            if record.status == "parked":
                await self.client.zadd(self.parked_key, {record.saga_id: time.time()})
                await self.client.zrem(self.active_key, record.saga_id)
            elif record.status in FINISHED:
                await self.client.pexpire(self.fence.key(record.saga_id), self.retention_ms)
                await self.client.zrem(self.parked_key, record.saga_id)
                await self.client.zrem(self.active_key, record.saga_id)
            else:
                await self.client.zrem(self.parked_key, record.saga_id)
                await self.track(record.saga_id)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis write failed: {exc}") from exc

    async def _index(self, key: str, limit: int) -> list[str]:
        try:
            ids = await self.client.zrange(key, 0, limit - 1)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"Redis read failed: {exc}") from exc
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def unfinished(self, limit: int) -> list[str]:
        return await self._index(self.active_key, limit)

    async def parked(self, limit: int) -> list[str]:
        return await self._index(self.parked_key, limit)


class PostgresSagaLog:
    """Saga records as rows of a PostgreSQL table, fenced by a ``fence_token`` column.

    ``connect`` returns a new ``psycopg.AsyncConnection``; the log keeps one, in autocommit
    mode (every write is one fenced statement), and reconnects after an error. Call
    :meth:`setup` once (idempotent) to create the table.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Any]],
        *,
        table: str = "idemkit_sagas",
        retention_s: float = 7 * 24 * 3600,
    ) -> None:
        self.connect = connect
        self.table = ident(table)
        self.retention_s = retention_s
        self._conn: Any = None

    async def _db(self) -> Any:
        if self._conn is None or self._conn.closed:
            conn = await self.connect()
            await conn.set_autocommit(True)
            self._conn = conn
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def setup(self) -> None:
        conn = await self._db()
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.table} (
                saga_id TEXT PRIMARY KEY, name TEXT, data TEXT, status TEXT, next INT,
                results TEXT, failed_step TEXT, error TEXT, parked_step TEXT,
                updated_ms BIGINT, fence_token BIGINT NOT NULL, expires_at TIMESTAMPTZ)"""
        )
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS {self.table}_open ON {self.table} (status, updated_ms) "
            "WHERE status IN ('running', 'compensating', 'parked')"
        )

    async def _fenced(self, saga_id: str, token: int, values: dict[str, Any]) -> None:
        sql = fenced_upsert_sql(self.table, ["saga_id"], list(values), paramstyle="format")
        conn = await self._db()
        try:
            cur = await conn.execute(sql, [saga_id, *values.values(), token])
        except Exception:
            await self.close()
            raise
        if cur.rowcount != 1:
            newest = await conn.execute(
                f"SELECT fence_token FROM {self.table} WHERE saga_id = %s", [saga_id]
            )
            row = await newest.fetchone()
            raise StaleTokenError(
                f"saga {saga_id!r} refused token {token}: a newer orchestrator took over",
                token=token,
                newest=int(row[0]) if row else token,
            )

    async def load(self, saga_id: str, token: int) -> SagaRecord | None:
        await self._fenced(saga_id, token, {})  # records the token: older ones are refused
        return await self.peek(saga_id)

    async def save(self, record: SagaRecord, token: int) -> None:
        await self._fenced(record.saga_id, token, dict(record.to_fields()))

    async def peek(self, saga_id: str) -> SagaRecord | None:
        conn = await self._db()
        cur = await conn.execute(
            f"SELECT name, data, status, next, results, failed_step, error, parked_step "
            f"FROM {self.table} WHERE saga_id = %s AND name IS NOT NULL",
            [saga_id],
        )
        row = await cur.fetchone()
        if row is None:
            return None
        names = ("name", "data", "status", "next", "results", "failed_step", "error", "parked")
        fields = {
            (n if n != "parked" else "parked_step"): str(v).encode()
            for n, v in zip(names, row, strict=True)
            if v is not None
        }
        return SagaRecord.from_fields(saga_id, fields)

    async def track(self, saga_id: str) -> None:
        return None  # the table is its own index: unfinished rows are found by status

    async def settle(self, record: SagaRecord) -> None:
        conn = await self._db()
        if record.status in FINISHED:
            await conn.execute(
                f"UPDATE {self.table} SET expires_at = now() + %s * interval '1 second' "
                "WHERE saga_id = %s",
                [self.retention_s, record.saga_id],
            )
        await conn.execute(
            f"DELETE FROM {self.table} WHERE saga_id IN (SELECT saga_id FROM {self.table} "
            "WHERE expires_at < now() LIMIT 100)"
        )

    async def _ids(self, statuses: tuple[str, ...], limit: int) -> list[str]:
        conn = await self._db()
        cur = await conn.execute(
            f"SELECT saga_id FROM {self.table} WHERE status = ANY(%s) ORDER BY updated_ms LIMIT %s",
            [list(statuses), limit],
        )
        return [row[0] for row in await cur.fetchall()]

    async def unfinished(self, limit: int) -> list[str]:
        return await self._ids(("running", "compensating"), limit)

    async def parked(self, limit: int) -> list[str]:
        return await self._ids(("parked",), limit)
