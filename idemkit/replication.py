"""Waiting for replicas: a script, then ``WAIT`` (or ``WAITAOF``) on the same connection.

Redis replicates asynchronously: a primary answers a write before any replica has it, so a
failover right after can lose an acknowledged completion or lock grant. ``WAIT n timeout``
blocks the connection until ``n`` replicas have acknowledged every write sent on it before,
or the timeout passes, and answers how many did. :class:`ReplicaAck` describes that wait;
the lease store and the fence send it right after their script, in the same round trip
(a non-transactional pipeline on a plain client, one node's pipeline on a Cluster client, or
the same batch of the auto-pipeline, see :mod:`idemkit.pipeline`).

``aof=True`` sends ``WAITAOF 1 n timeout`` instead: the primary and ``n`` replicas have
fsynced the write to their AOF. It needs Redis >= 7.2 with ``appendonly yes`` on the primary
and the replicas; older servers answer "unknown command", reported as a
:class:`~idemkit.errors.ConfigurationError` on first use.

Fewer acknowledgements than asked raise :class:`~idemkit.errors.ReplicationTimeoutError`
(a ``StoreUnavailableError``): the write stays applied on the primary, callers treat it like
a store failure and repeat (the scripts are idempotent for their holder). ``WAIT`` does not
make Redis strongly consistent: a replica that acknowledged may still lose the write if it
is not the one promoted, and a primary that lost its replicas keeps accepting writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import PipelineCommand
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from idemkit.errors import ConfigurationError, ReplicationTimeoutError

__all__ = [
    "ReplicaAck",
    "SyncWaitingScript",
    "WaitingScript",
    "cluster_route",
    "replica_ack",
    "sync_cluster_route",
]

# Redirects and topology changes one command may go through (redis-py's own TTL is 16).
_ROUTE_ATTEMPTS: Final = 16
_NETWORK = (RedisConnectionError, RedisTimeoutError, OSError)
_TOPOLOGY = (ClusterDownError, SlotNotCoveredError)


@dataclass(frozen=True, slots=True)
class ReplicaAck:
    """Wait for ``replicas`` replicas (at most ``timeout_ms``) after a durable write."""

    replicas: int
    timeout_ms: int
    aof: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int):
            raise ConfigurationError(f"replicas must be an int, got {self.replicas!r}")
        if self.replicas < 1:
            raise ConfigurationError(f"replicas must be >= 1 to wait, got {self.replicas!r}")
        if isinstance(self.timeout_ms, bool) or not isinstance(self.timeout_ms, int):
            raise ConfigurationError(f"replica_timeout_ms must be an int, got {self.timeout_ms!r}")
        if self.timeout_ms <= 0:
            # WAIT with 0 blocks forever: never what a caller with a deadline wants.
            raise ConfigurationError(
                f"replica_timeout_ms must be > 0 (0 would block forever), got {self.timeout_ms}"
            )

    @property
    def command(self) -> tuple[Any, ...]:
        if self.aof:
            return ("WAITAOF", 1, self.replicas, self.timeout_ms)
        return ("WAIT", self.replicas, self.timeout_ms)

    def check(self, reply: Any, what: str) -> None:
        """Raise unless ``reply`` (to :attr:`command`) counts enough replicas."""
        if isinstance(reply, ResponseError):
            message = str(reply)
            if self.aof and "unknown command" in message.lower():
                raise ConfigurationError(
                    "replica_aof=True needs WAITAOF (Redis >= 7.2); this server does not know "
                    "it: upgrade, or use replica_aof=False (WAIT: replicas received the write, "
                    "without waiting for their fsync)"
                ) from reply
            if self.aof and "appendonly" in message.lower():
                raise ConfigurationError(
                    "replica_aof=True needs 'appendonly yes' on the primary (WAITAOF counts "
                    f"fsyncs of the AOF): {message}"
                ) from reply
            raise reply
        acked = int(reply[1]) if self.aof else int(reply)
        if acked < self.replicas:
            raise ReplicationTimeoutError(
                f"{what}: {acked} of {self.replicas} replica(s) acknowledged the write within "
                f"{self.timeout_ms} ms; it is applied on the primary but a failover could "
                "lose it (retrying is safe)",
                acked=acked,
                required=self.replicas,
            )


def replica_ack(replicas: int, timeout_ms: int, aof: bool = False) -> ReplicaAck | None:
    """The :class:`ReplicaAck` for a constructor's options; None when ``replicas`` is 0."""
    if replicas == 0 and not isinstance(replicas, bool):
        return None
    return ReplicaAck(replicas, timeout_ms, aof)


def _first_error(replies: Sequence[Any]) -> BaseException | None:
    return next((r for r in replies if isinstance(r, BaseException)), None)


def _evalsha(sha: str, keys: Sequence[Any], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", sha, len(keys), *keys, *args)


# -- Redis Cluster: route a batch of commands to the node of a key's slot ----------------------


async def cluster_route(
    client: aioredis.RedisCluster,
    route: Any,
    send: Callable[[AsyncClusterNode, bool], Awaitable[list[Any]]],
) -> list[Any]:
    """Run ``send(node, asking)`` on the primary serving ``route``'s slot and return its
    replies, following MOVED and ASK and refreshing the slot map after a node failure or a
    CLUSTERDOWN (the failover of a primary), with a short backoff. Bounded by
    ``_ROUTE_ATTEMPTS`` tries; callers bound the time as well (``store_timeout``)."""
    await client.initialize()
    manager = client.nodes_manager
    slot = client.keyslot(route)
    asking: AsyncClusterNode | None = None
    delay = 0.01
    error: BaseException | None = None
    for _ in range(_ROUTE_ATTEMPTS):
        node = asking or manager.get_node_from_slot(slot)
        try:
            replies = await send(node, asking is not None)
        except _NETWORK as exc:
            error = exc
        else:
            asking = None
            error = _first_error(replies)
            if isinstance(error, MovedError):
                await manager.move_slot(error)
                continue
            if isinstance(error, AskError):
                asking = manager.get_node(host=error.host, port=error.port) or AsyncClusterNode(
                    error.host, error.port, **manager.connection_kwargs
                )
                continue
            if not isinstance(error, (TryAgainError, *_TOPOLOGY)):
                return replies
        # The node died or the cluster is electing a new primary for the slot: ask again
        # who serves it, after a pause that grows up to a quarter of a second.
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.25)
        if not isinstance(error, TryAgainError):
            await _refresh(client)
    assert error is not None
    raise error


async def _refresh(client: aioredis.RedisCluster) -> None:
    # Concurrent callers share one refresh (the nodes manager's lock and epoch).
    # Every node still unreachable: the next attempt tries again.
    with contextlib.suppress(RedisError, OSError):
        await client.nodes_manager.initialize()


def sync_cluster_route(
    client: redis.RedisCluster,
    route: Any,
    send: Callable[[redis.Redis, bool], list[Any]],
) -> list[Any]:
    """The blocking twin of :func:`cluster_route`; ``send`` gets the node's ``redis.Redis``."""
    manager = client.nodes_manager
    slot = client.keyslot(route)  # type: ignore[no-untyped-call]
    asking: tuple[str, int] | None = None
    delay = 0.01
    error: BaseException | None = None
    for _ in range(_ROUTE_ATTEMPTS):
        try:
            if asking is not None:
                node = manager.get_node(host=asking[0], port=asking[1])
                if node is None:
                    raise RedisConnectionError(f"ASK to unknown node {asking}")
            else:
                node = manager.get_node_from_slot(slot)
            replies = send(client.get_redis_connection(node), asking is not None)
        except _NETWORK as exc:
            error = exc
        except _TOPOLOGY as exc:
            error = exc
        else:
            asking = None
            error = _first_error(replies)
            if isinstance(error, MovedError):
                manager.move_slot(error)
                continue
            if isinstance(error, AskError):
                asking = (error.host, int(error.port))
                continue
            if not isinstance(error, (TryAgainError, *_TOPOLOGY)):
                return replies
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
        if not isinstance(error, TryAgainError):
            with contextlib.suppress(RedisError, OSError):
                manager.initialize()
    assert error is not None
    raise error


# -- scripts followed by a wait ------------------------------------------------------------------


class WaitingScript:
    """A Lua script run with EVALSHA and followed by :attr:`ReplicaAck.command` on the same
    connection, in one round trip, for ``redis.asyncio`` clients (plain, Sentinel, Cluster).
    Called like a registered script: ``await script(keys=[...], args=[...])``."""

    def __init__(
        self, client: aioredis.Redis | aioredis.RedisCluster, source: str, ack: ReplicaAck
    ) -> None:
        registered = client.register_script(source)
        self.client = client
        self.source = source
        self.sha = registered.sha
        self.ack = ack

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        commands = [_evalsha(self.sha, keys, args), self.ack.command]
        client = self.client
        if isinstance(client, aioredis.RedisCluster):

            async def send(node: AsyncClusterNode, asking: bool) -> list[Any]:
                # NOSCRIPT is handled per node: after a redirect the script may be missing
                # on another node than the slot map named.
                replies = await _node_pipeline(node, commands, asking)
                if isinstance(replies[0], NoScriptError):
                    await _node_pipeline(node, [("SCRIPT", "LOAD", self.source)], asking)
                    replies = await _node_pipeline(node, commands, asking)
                return replies

            replies = await cluster_route(client, keys[0], send)
        else:
            replies = await _async_pipeline(client, commands)
            if isinstance(replies[0], NoScriptError):
                await client.script_load(self.source)
                replies = await _async_pipeline(client, commands)
        if isinstance(replies[0], BaseException):
            raise replies[0]
        self.ack.check(replies[1], "script")
        return replies[0]


async def _node_pipeline(
    node: AsyncClusterNode, commands: list[tuple[Any, ...]], asking: bool
) -> list[Any]:
    batch = [("ASKING",), *commands] if asking else commands
    stack = [PipelineCommand(i, *command) for i, command in enumerate(batch)]
    await node.execute_pipeline(stack)
    replies = [command.result for command in stack]
    return replies[1:] if asking else replies


async def _async_pipeline(client: aioredis.Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute(raise_on_error=False))


class SyncWaitingScript:
    """The blocking twin of :class:`WaitingScript` (``redis.Redis``, Sentinel, Cluster)."""

    def __init__(self, client: redis.Redis | redis.RedisCluster, source: str, ack: ReplicaAck):
        registered = client.register_script(source)
        self.client = client
        self.source = source
        self.sha = registered.sha
        self.ack = ack

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        commands = [_evalsha(self.sha, keys, args), self.ack.command]
        client = self.client
        if isinstance(client, redis.RedisCluster):

            def send(node: redis.Redis, asking: bool) -> list[Any]:
                replies = _pipeline(node, commands, asking)
                if isinstance(replies[0], NoScriptError):
                    _pipeline(node, [("SCRIPT", "LOAD", self.source)], asking)
                    replies = _pipeline(node, commands, asking)
                return replies

            replies = sync_cluster_route(client, keys[0], send)
        else:
            replies = _pipeline(client, commands)
            if isinstance(replies[0], NoScriptError):
                client.script_load(self.source)
                replies = _pipeline(client, commands)
        if isinstance(replies[0], BaseException):
            raise replies[0]
        self.ack.check(replies[1], "script")
        return replies[0]


def _pipeline(
    client: redis.Redis, commands: list[tuple[Any, ...]], asking: bool = False
) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in [("ASKING",), *commands] if asking else commands:
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
    replies = list(pipe.execute(raise_on_error=False))
    return replies[1:] if asking else replies
