"""The persisted saga log: where a saga is, so another process can resume or compensate it.

One record per saga, written only through the orchestrator's fencing token: a
:class:`RedisSagaLog` record is a fenced hash (:class:`~idemkit.fence.Fence`), so after a
new orchestrator has read the record with its newer token, the old one's writes are refused
(:class:`~idemkit.errors.StaleTokenError`) and it cannot move the saga any more.

Unfinished sagas are listed in an index (a sorted set) that
:meth:`~idemkit.patterns.saga.SagaOrchestrator.recover` scans; parked sagas (a compensation
that keeps failing) in another, and their records never expire. Finished records expire
after ``retention_ms``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from idemkit.errors import StoreUnavailableError
from idemkit.fence import Fence

__all__ = ["FINISHED", "RedisSagaLog", "SagaLog", "SagaRecord", "SagaStatus"]

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
        client: aioredis.Redis,
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
