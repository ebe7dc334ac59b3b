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
- Replicas: commands that must be acknowledged by replicas (``ReplicaAck``, see
  :mod:`idemkit.replication`) are followed by one ``WAIT`` at the end of their batch, on the
  same connection: it covers every write before it, so a batch of 32 completions pays one
  wait. A connection lost after such a command was answered but before its ``WAIT`` was
  fails it rather than sending it again (it ran; only its replication is unknown).

Redis Cluster (:class:`ClusterAutoPipeline`): one :class:`AutoPipeline`-like batcher per
primary, on a connection of that node; each command goes to the batcher of the primary
serving its key's slot. MOVED updates the slot map and resends, ASK resends with ``ASKING``
in front on the target's connection, and a node failure or CLUSTERDOWN (a failover in
progress) refreshes the slot map and resends with a short backoff, all within the caller's
``store_timeout``.

Sentinel-managed clients pipeline like plain ones: their connections ask the sentinels for
the primary when they connect, and a connection that finds itself on a demoted primary
(READONLY) disconnects, so the dedicated connection reconnects to the new primary on the
resend.

:class:`PipelinedLeaseStore` is a :class:`~idemkit.lease.LeaseStore` whose scripts go
through an :class:`AutoPipeline` (or a :class:`ClusterAutoPipeline`) as ``EVALSHA`` with a
precomputed digest, loading a script only when Redis answers NOSCRIPT (first use, restart,
``SCRIPT FLUSH``). The middleware uses it for ``redis.asyncio`` clients on real connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
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
from idemkit.replication import ReplicaAck, cluster_route, replica_ack

__all__ = [
    "AutoPipeline",
    "ClusterAutoPipeline",
    "PipelinedLeaseStore",
    "PipelinedScript",
    "can_pipeline",
]

log = logging.getLogger("idemkit")

_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.IncompleteReadError)
_PIPELINABLE = (Connection, SSLConnection, UnixDomainSocketConnection)


def can_pipeline(client: object) -> bool:
    """True for a ``redis.asyncio`` client on real connections: a ``Redis`` (plain or
    Sentinel-managed) or a ``RedisCluster``; False for fakes and single-connection clients."""
    if isinstance(client, aioredis.RedisCluster):
        connection_class = client.get_connection_kwargs().get("connection_class", Connection)
        return isinstance(connection_class, type) and _real(connection_class)
    if not isinstance(client, aioredis.Redis):
        return False
    pool = getattr(client, "connection_pool", None)
    connection_class = getattr(pool, "connection_class", None)
    return (
        getattr(client, "single_connection_client", False) is False
        and isinstance(connection_class, type)
        and _real(connection_class)
    )


def _real(connection_class: type) -> bool:
    return issubclass(connection_class, _PIPELINABLE) and connection_class.__module__.startswith(
        "redis."
    )


class _Item:
    """Commands of one caller, written back to back; ``asking`` puts ``ASKING`` in front
    (Cluster, after an ASK redirect) and ``wait`` makes the batch end with a ``WAIT``."""

    __slots__ = ("asking", "commands", "future", "wait")

    def __init__(
        self,
        commands: Sequence[tuple[Any, ...]],
        future: asyncio.Future[list[Any]],
        wait: bool,
        asking: bool,
    ) -> None:
        self.commands = commands
        self.future = future
        self.wait = wait
        self.asking = asking

    def resolve(self, replies: list[Any]) -> None:
        if not self.future.done():
            self.future.set_result(replies)


class _Batcher:
    """Queues items of concurrent callers and writes them in batches on one connection."""

    def __init__(self, *, retries: int, max_batch: int, ack: ReplicaAck | None) -> None:
        self._retries = retries
        self._max_batch = max_batch
        self._ack = ack
        self._queue: deque[_Item] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: AbstractConnection | None = None

    async def _connect(self) -> AbstractConnection:
        raise NotImplementedError

    async def _release(self, conn: AbstractConnection) -> None:
        raise NotImplementedError

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply (bytes undecoded); an error reply raises."""
        reply = (await self.run((args,)))[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def run(
        self, commands: Sequence[tuple[Any, ...]], *, wait: bool = False, asking: bool = False
    ) -> list[Any]:
        """Send ``commands`` back to back and return their replies, error replies in place
        (``ResponseError`` instances). With ``wait`` the batch ends with the store's replica
        wait, whose reply is appended."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind(loop)
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append(_Item(commands, future, wait and self._ack is not None, asking))
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
                batch: list[_Item] = []
                while queue and len(batch) < self._max_batch:
                    item = queue.popleft()
                    if not item.future.done():  # cancelled before it was written: drop it
                        batch.append(item)
                if batch:
                    await self._send(batch)
        finally:
            self._runner = None

    def _pack(self, batch: list[_Item]) -> tuple[list[tuple[Any, ...]], bool]:
        commands: list[tuple[Any, ...]] = []
        for item in batch:
            if item.asking:
                commands.append(("ASKING",))
            commands.extend(item.commands)
        waits = self._ack is not None and any(item.wait for item in batch)
        if waits:
            assert self._ack is not None
            commands.append(self._ack.command)
        return commands, waits

    async def _send(self, batch: list[_Item]) -> None:
        failures = 0
        while batch:
            conn = self._conn
            answered = 0
            waiting: list[tuple[_Item, list[Any]]] = []
            try:
                if conn is None:
                    try:
                        conn = await self._connect()
                    except _RETRYABLE as exc:
                        # Connecting already went through the client's own Retry (with its
                        # backoff); retrying around it again would multiply the wait before
                        # callers get their 503.
                        _fail(batch, _as_redis_error(exc))
                        return
                    self._conn = conn
                commands, waits = self._pack(batch)
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                for item in batch:
                    if item.asking:
                        await _read(conn)  # +OK; an error here shows in the command's reply
                    replies = [await _read(conn) for _ in item.commands]
                    answered += 1
                    if item.wait:
                        waiting.append((item, replies))
                    else:
                        item.resolve(replies)
                if waits:
                    acked = await _read(conn)
                    for item, replies in waiting:
                        item.resolve([*replies, acked])
                return
            except _RETRYABLE as exc:
                await self._drop(conn)
                # Answered commands ran: resending them would run them twice. Only whether
                # replicas have them is unknown, which their callers learn as a failure.
                _fail([item for item, _ in waiting], _as_redis_error(exc))
                batch = [item for item in batch[answered:] if not item.future.done()]
                failures += 1
                if failures > self._retries:
                    _fail(batch, _as_redis_error(exc))
                    return
            except BaseException as exc:
                # Cancelled runner (loop shutting down) or a bug: nobody may wait forever,
                # and the connection may hold unread replies, so it goes.
                await self._drop(conn)
                _fail([item for item, _ in waiting], exc)
                _fail(batch[answered:], exc)
                raise

    async def aclose(self) -> None:
        """Close the dedicated connection (the next command opens another)."""
        await self._drop(self._conn)

    async def _drop(self, conn: AbstractConnection | None) -> None:
        self._conn = None
        if conn is None:
            return
        with contextlib.suppress(Exception):
            await conn.disconnect()
        with contextlib.suppress(Exception):
            await self._release(conn)


async def _read(conn: AbstractConnection) -> Any:
    try:
        return await conn.read_response(disable_decoding=True)
    except ResponseError as exc:
        return exc


class AutoPipeline(_Batcher):
    """Commands of concurrent callers written together on one dedicated connection of a
    ``redis.asyncio.Redis`` client's pool (plain or Sentinel-managed)."""

    def __init__(
        self, client: aioredis.Redis, *, max_batch: int = 512, ack: ReplicaAck | None = None
    ) -> None:
        self._pool = client.connection_pool
        retry = client.get_retry()
        # At least one resend on a fresh connection: the dedicated connection lives long and
        # goes stale when Redis restarts (or, under Sentinel, fails over). The caller's
        # store_timeout bounds the total, so these retries never stack past it.
        retries = max(1, retry.get_retries() if retry is not None else 0)
        super().__init__(retries=retries, max_batch=max_batch, ack=ack)

    async def _connect(self) -> AbstractConnection:
        conn: AbstractConnection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        return conn

    async def _release(self, conn: AbstractConnection) -> None:
        await self._pool.release(conn)


class _NodePipeline(_Batcher):
    """The batcher of one Cluster node, on one connection taken from that node."""

    def __init__(self, node: ClusterNode, *, max_batch: int, ack: ReplicaAck | None) -> None:
        self.node = node
        # One resend on a fresh connection (a restarted node); anything more is the
        # router's job, which asks the cluster who serves the slot now.
        super().__init__(retries=1, max_batch=max_batch, ack=ack)

    async def _connect(self) -> AbstractConnection:
        conn = self.node.acquire_connection()
        try:
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            self.node.release(conn)
            raise
        return conn

    async def _release(self, conn: AbstractConnection) -> None:
        self.node.release(conn)  # type: ignore[arg-type]


class ClusterAutoPipeline:
    """Auto-pipelining on ``redis.asyncio.RedisCluster``: a batcher per primary, commands
    routed by their key's slot (see the module docstring)."""

    def __init__(
        self,
        client: aioredis.RedisCluster,
        *,
        max_batch: int = 512,
        ack: ReplicaAck | None = None,
    ) -> None:
        self._client = client
        self._max_batch = max_batch
        self._ack = ack
        self._pipes: dict[str, _NodePipeline] = {}
        self._retired: list[_NodePipeline] = []

    async def execute(self, *args: Any, route: Any) -> Any:
        reply = (await self.run((args,), route=route))[0]
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def run(
        self,
        commands: Sequence[tuple[Any, ...]],
        *,
        route: Any,
        wait: bool = False,
        script: Any = None,
    ) -> list[Any]:
        """Send ``commands`` to the primary serving ``route``'s slot; see
        :meth:`AutoPipeline.run`. With ``script`` (the source of the EVALSHA that is the
        first command), a NOSCRIPT reply loads it on the node that gave it and resends:
        after a redirect that is another node than the slot map named."""

        async def send(node: ClusterNode, asking: bool) -> list[Any]:
            pipe = self._pipe(node)
            replies = await pipe.run(commands, wait=wait, asking=asking)
            if script is not None and isinstance(replies[0], NoScriptError):
                await pipe.run((("SCRIPT", "LOAD", script),), asking=asking)
                replies = await pipe.run(commands, wait=wait, asking=asking)
            return replies

        return await cluster_route(self._client, route, send)

    def _pipe(self, node: ClusterNode) -> _NodePipeline:
        pipe = self._pipes.get(node.name)
        if pipe is None or pipe.node is not node:
            if pipe is not None:
                # The node left the slot map and came back as a new object (restarted): the
                # old batcher's connection belongs to the old object; aclose() closes it.
                self._retired.append(pipe)
            pipe = self._pipes[node.name] = _NodePipeline(
                node, max_batch=self._max_batch, ack=self._ack
            )
        return pipe

    async def aclose(self) -> None:
        """Close the batchers' connections, and every connection of the nodes they served:
        a node that left the slot map (a dead primary) is no longer closed by the client's
        own ``aclose()``."""
        pipes = [*self._pipes.values(), *self._retired]
        self._pipes.clear()
        self._retired.clear()
        for pipe in pipes:
            await pipe.aclose()
            with contextlib.suppress(Exception):
                await pipe.node.disconnect()


def _as_redis_error(exc: BaseException) -> RedisError:
    return exc if isinstance(exc, RedisError) else RedisConnectionError(str(exc))


def _fail(batch: Sequence[_Item], exc: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            if isinstance(exc, asyncio.CancelledError):
                item.future.cancel()
            else:
                item.future.set_exception(exc)


class PipelinedScript:
    """Stands in for a registered ``AsyncScript``: ``EVALSHA`` through an :class:`AutoPipeline`
    (or a :class:`ClusterAutoPipeline`, routed by the first key) with the digest computed
    once, ``SCRIPT LOAD`` only after a NOSCRIPT reply; with ``ack`` the script's batch ends
    with the replica wait, and too few acknowledgements raise ``ReplicationTimeoutError``."""

    __slots__ = ("_ack", "_loading", "_pipe", "script", "sha")

    def __init__(
        self,
        script: AsyncScript,
        pipe: AutoPipeline | ClusterAutoPipeline,
        ack: ReplicaAck | None = None,
    ) -> None:
        self.script = script.script
        self.sha = script.sha
        self._pipe = pipe
        self._ack = ack
        self._loading: asyncio.Future[Any] | None = None

    async def __call__(
        self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: object = None
    ) -> Any:
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        wait = self._ack is not None
        if isinstance(self._pipe, ClusterAutoPipeline):
            replies = await self._pipe.run((command,), route=keys[0], wait=wait, script=self.script)
        else:
            replies = await self._pipe.run((command,), wait=wait)
            if isinstance(replies[0], NoScriptError):
                await self._load()
                replies = await self._pipe.run((command,), wait=wait)
        if isinstance(replies[0], BaseException):
            raise replies[0]
        if self._ack is not None:
            self._ack.check(replies[1], "script")
        return replies[0]

    async def _load(self) -> None:
        # Single flight: the callers that all met NOSCRIPT at once (after a restart) share
        # one SCRIPT LOAD, sent through the pipeline rather than on new pool connections.
        assert isinstance(self._pipe, AutoPipeline)
        loading = self._loading
        if loading is None or loading.done():
            loading = self._loading = asyncio.ensure_future(
                self._pipe.run((("SCRIPT", "LOAD", self.script),))
            )
        await asyncio.shield(loading)


class PipelinedLeaseStore(LeaseStore):
    """A :class:`LeaseStore` whose scripts go through an :class:`AutoPipeline` (a
    :class:`ClusterAutoPipeline` for a ``RedisCluster`` client).

    Only how scripts are run changes (:meth:`LeaseStore._script`), so every operation of the
    store (and its error mapping to ``StoreUnavailableError``) stays the one defined in
    ``idemkit/lease.py``. ``replicas``, ``replica_timeout_ms`` and ``replica_aof`` are the
    lease store's (see :mod:`idemkit.replication`); the scripts that wait for replicas get a
    pipeline (and connection) of their own, because ``WAIT`` holds its connection until the
    replicas answer: claims and replays never queue behind it.
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        time_floor: bool = True,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        replica_aof: bool = False,
    ) -> None:
        # Before super(): it registers the scripts.
        ack = replica_ack(replicas, replica_timeout_ms, replica_aof)
        self._pipe = _pipeline_for(client, None)
        self._durable_pipe = self._pipe if ack is None else _pipeline_for(client, ack)
        super().__init__(
            client,
            prefix=prefix,
            time_floor=time_floor,
            replicas=replicas,
            replica_timeout_ms=replica_timeout_ms,
            replica_aof=replica_aof,
        )

    async def aclose(self) -> None:
        """Close the pipelines' dedicated connections (the client's ``aclose()`` closes its
        pool; on a Cluster, nodes that left the slot map are closed only here)."""
        await self._pipe.aclose()
        if self._durable_pipe is not self._pipe:
            await self._durable_pipe.aclose()

    def _script(self, source: str, ack: ReplicaAck | None = None) -> PipelinedScript:
        pipe = self._pipe if ack is None else self._durable_pipe
        return PipelinedScript(self.client.register_script(source), pipe, ack)


def _pipeline_for(
    client: aioredis.Redis | aioredis.RedisCluster, ack: ReplicaAck | None
) -> AutoPipeline | ClusterAutoPipeline:
    if isinstance(client, aioredis.RedisCluster):
        return ClusterAutoPipeline(client, ack=ack)
    return AutoPipeline(client, ack=ack)
