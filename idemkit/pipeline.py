"""Auto-pipelining: the lease scripts of concurrent requests share one write and one read.

A Redis round trip costs the client far more than the script costs the server (a send, a
wake-up, a read and the client library's per-call work). Under concurrency many requests
want a round trip at the same moment, so :class:`AutoPipeline` queues their commands and one
runner task writes everything queued in one ``send`` on one dedicated connection, then reads
the replies in order. A lone request pays what it paid before (one round trip); 32
concurrent ones pay roughly one round trip between them.

Correctness:

- Order: replies are read in the order the commands were written, on one connection.
- Cancellation: a caller cancelled before its command was written is dropped from the batch;
  after that, its reply is read and discarded (the runner task is never the caller's task,
  so cancelling a request never leaves a half-read reply on the connection).
- Errors: a Redis error reply (``ResponseError``, e.g. NOSCRIPT) fails only its own command.
  A connection failure or timeout drops the connection and retries the commands not yet
  answered as often as the client's ``Retry`` allows (at least once, on a fresh
  connection), then fails them; :class:`PipelinedLeaseStore` turns that into
  ``StoreUnavailableError``. Callers bound every wait with their own deadline
  (``store_timeout``), so retries never add up past it.

:class:`PipelinedLeaseStore` is a :class:`~idemkit.lease.LeaseStore` whose scripts go
through an :class:`AutoPipeline` as ``EVALSHA`` with a precomputed digest, loading a script
only when Redis answers NOSCRIPT (first use, restart, ``SCRIPT FLUSH``). The middleware uses
it for a plain ``redis.asyncio.Redis``; the pipeline holds one connection of that client's
pool for its lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from idemkit.lease import DEFAULT_PREFIX, LeaseStore

__all__ = ["AutoPipeline", "PipelinedLeaseStore", "PipelinedScript", "can_pipeline"]

log = logging.getLogger("idemkit")

_Pending = tuple[tuple[Any, ...], "asyncio.Future[Any]"]
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.IncompleteReadError)
_PIPELINABLE = (Connection, SSLConnection, UnixDomainSocketConnection)


def can_pipeline(client: object) -> bool:
    """True for a ``redis.asyncio.Redis`` on a real connection pool (not Cluster, not fakes)."""
    if not isinstance(client, aioredis.Redis) or isinstance(client, aioredis.RedisCluster):
        return False
    pool = getattr(client, "connection_pool", None)
    connection_class = getattr(pool, "connection_class", None)
    return (
        getattr(client, "single_connection_client", False) is False
        and isinstance(connection_class, type)
        and issubclass(connection_class, _PIPELINABLE)
        and connection_class.__module__.startswith("redis.")
    )


class AutoPipeline:
    """Commands of concurrent callers written together on one dedicated connection."""

    def __init__(self, client: aioredis.Redis, *, max_batch: int = 512) -> None:
        self._pool = client.connection_pool
        retry = client.get_retry()
        # At least one resend on a fresh connection: the dedicated connection lives long and
        # goes stale when Redis restarts. The caller's store_timeout bounds the total, so
        # these retries never stack past it.
        self._retries = max(1, retry.get_retries() if retry is not None else 0)
        self._max_batch = max_batch
        self._queue: deque[_Pending] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: AbstractConnection | None = None

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply (bytes undecoded)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if self._runner is None:
            self._runner = loop.create_task(self._run())
        return await future

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # A new event loop (tests, a restarted app): state of the old one cannot be reused.
        self._loop = loop
        self._queue.clear()
        self._runner = None
        self._conn = None

    async def _run(self) -> None:
        try:
            queue = self._queue
            while queue:
                batch: list[_Pending] = []
                while queue and len(batch) < self._max_batch:
                    item = queue.popleft()
                    if not item[1].done():  # cancelled before it was written: drop it
                        batch.append(item)
                if batch:
                    await self._send(batch)
        finally:
            self._runner = None

    async def _send(self, batch: list[_Pending]) -> None:
        failures = 0
        while batch:
            conn = self._conn
            answered = 0
            try:
                if conn is None:
                    try:
                        conn = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                    except _RETRYABLE as exc:
                        # Connecting already went through the client's own Retry (with its
                        # backoff); retrying around it again would multiply the wait before
                        # callers get their 503.
                        _fail(batch, _as_redis_error(exc))
                        return
                    self._conn = conn
                packed = conn.pack_commands([args for args, _ in batch])
                await conn.send_packed_command(packed, check_health=False)
                for _, future in batch:
                    try:
                        reply = await conn.read_response(disable_decoding=True)
                    except ResponseError as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(reply)
                    answered += 1
                return
            except _RETRYABLE as exc:
                await self._drop(conn)
                batch = [item for item in batch[answered:] if not item[1].done()]
                failures += 1
                if failures > self._retries:
                    _fail(batch, _as_redis_error(exc))
                    return
            except BaseException as exc:
                # Cancelled runner (loop shutting down) or a bug: nobody may wait forever,
                # and the connection may hold unread replies, so it goes.
                await self._drop(conn)
                _fail(batch[answered:], exc)
                raise

    async def _drop(self, conn: AbstractConnection | None) -> None:
        self._conn = None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.disconnect()
        with contextlib.suppress(Exception):
            await self._pool.release(conn)


def _as_redis_error(exc: BaseException) -> RedisError:
    return exc if isinstance(exc, RedisError) else RedisConnectionError(str(exc))


def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            if isinstance(exc, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(exc)


class PipelinedScript:
    """Stands in for a registered ``AsyncScript``: ``EVALSHA`` through an :class:`AutoPipeline`
    with the digest computed once, ``SCRIPT LOAD`` only after a NOSCRIPT reply."""

    __slots__ = ("_loading", "_pipe", "script", "sha")

    def __init__(self, script: AsyncScript, pipe: AutoPipeline) -> None:
        self.script = script.script
        self.sha = script.sha
        self._pipe = pipe
        self._loading: asyncio.Future[Any] | None = None

    async def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: object = None
    ) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self._pipe.execute(*command)
        except NoScriptError:
            await self._load()
            return await self._pipe.execute(*command)

    async def _load(self) -> None:
        # Single flight: the callers that all met NOSCRIPT at once (after a restart) share
        # one SCRIPT LOAD, sent through the pipeline rather than on new pool connections.
        loading = self._loading
        if loading is None or loading.done():
            loading = self._loading = asyncio.ensure_future(
                self._pipe.execute("SCRIPT", "LOAD", self.script)
            )
        await asyncio.shield(loading)


class PipelinedLeaseStore(LeaseStore):
    """A :class:`LeaseStore` whose scripts go through an :class:`AutoPipeline`.

    Only how scripts are run changes (:meth:`LeaseStore._script`), so every operation of the
    store (and its error mapping to ``StoreUnavailableError``) stays the one defined in
    ``idemkit/lease.py``.
    """

    def __init__(
        self, client: aioredis.Redis, *, prefix: str = DEFAULT_PREFIX, time_floor: bool = True
    ) -> None:
        self._pipe = AutoPipeline(client)  # before super(): it registers the scripts
        super().__init__(client, prefix=prefix, time_floor=time_floor)

    def _script(self, source: str) -> PipelinedScript:
        return PipelinedScript(self.client.register_script(source), self._pipe)
