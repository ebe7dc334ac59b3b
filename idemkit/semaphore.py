"""Fenced semaphores: up to ``limit`` holders, each with its own fencing token.

Not a second mechanism: a semaphore of ``limit`` is ``limit`` lease records (slots) under
one hash tag, and acquiring claims the first free slot with the same owner-mode claim
script a :class:`~idemkit.lock.FencedLock` uses (one round trip, idempotent on retry).
Release and extend act on the holder's slot; releases wake one waiter each. A holder's
token fences what that holder writes; tokens of different slots are not ordered against
each other, so fence per slot (``f"{name}:{sem.slot}"``) or per resource, not per semaphore.
"""

from __future__ import annotations

from typing import Final

import redis
import redis.asyncio as aioredis

from idemkit.errors import ConfigurationError
from idemkit.lock import DEFAULT_RETENTION_MS, FencedLock, LostCallback, SyncFencedLock
from idemkit.observe import Observer

__all__ = ["MAX_LIMIT", "FencedSemaphore", "SyncFencedSemaphore"]

DEFAULT_SEMAPHORE_PREFIX: Final = "idemkit:sem:"
# Every acquire reads every slot in one script: keep that script short.
MAX_LIMIT: Final = 1024


def _check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigurationError(f"limit must be an int from 1 to {MAX_LIMIT}, got {limit!r}")
    return limit


class FencedSemaphore(FencedLock):
    """An asyncio semaphore of ``limit`` fenced slots; ``async with sem as token:``."""

    _default_prefix = DEFAULT_SEMAPHORE_PREFIX
    _what = "semaphore"

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        name: str,
        limit: int,
        *,
        lease_ms: int = 30_000,
        retention_ms: int = DEFAULT_RETENTION_MS,
        watchdog: bool = False,
        on_lost: LostCallback | None = None,
        poll_interval: float = 1.0,
        prefix: str | None = None,
        time_floor: bool = True,
        observer: Observer | None = None,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        replica_aof: bool = False,
    ) -> None:
        super().__init__(
            client,
            name,
            lease_ms=lease_ms,
            retention_ms=retention_ms,
            watchdog=watchdog,
            on_lost=on_lost,
            poll_interval=poll_interval,
            observer=observer,
            prefix=prefix,
            time_floor=time_floor,
            replicas=replicas,
            replica_timeout_ms=replica_timeout_ms,
            replica_aof=replica_aof,
            _slots=_check_limit(limit),
        )
        self.limit = limit

    @property
    def slot(self) -> int:
        """Index of the slot this handle holds (0 to ``limit - 1``)."""
        self.ensure_held()
        return self._slot


class SyncFencedSemaphore(SyncFencedLock):
    """The blocking twin of :class:`FencedSemaphore`."""

    _default_prefix = DEFAULT_SEMAPHORE_PREFIX
    _what = "semaphore"

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        name: str,
        limit: int,
        *,
        lease_ms: int = 30_000,
        retention_ms: int = DEFAULT_RETENTION_MS,
        watchdog: bool = False,
        on_lost: LostCallback | None = None,
        poll_interval: float = 1.0,
        prefix: str | None = None,
        time_floor: bool = True,
        observer: Observer | None = None,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        replica_aof: bool = False,
    ) -> None:
        super().__init__(
            client,
            name,
            lease_ms=lease_ms,
            retention_ms=retention_ms,
            watchdog=watchdog,
            on_lost=on_lost,
            poll_interval=poll_interval,
            observer=observer,
            prefix=prefix,
            time_floor=time_floor,
            replicas=replicas,
            replica_timeout_ms=replica_timeout_ms,
            replica_aof=replica_aof,
            _slots=_check_limit(limit),
        )
        self.limit = limit

    @property
    def slot(self) -> int:
        """Index of the slot this handle holds (0 to ``limit - 1``)."""
        self.ensure_held()
        return self._slot
