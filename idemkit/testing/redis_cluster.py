"""A throwaway Redis Cluster on loopback, formed from ``redis-server`` processes.

``RedisCluster(masters=3, replicas=1)`` is three primaries with one replica each, formed by
``redis-cli --cluster create``. Failover helpers find the primary that serves a key's slot
(:meth:`RedisCluster.primary_for`), kill it (:meth:`RedisCluster.kill_primary_for`) and wait
until one of its replicas is promoted and every live node reports ``cluster_state:ok``
(:meth:`RedisCluster.wait_for_failover`). A killed node started again
(:meth:`RedisCluster.restart`) rejoins as a replica of the new primary. Every wait is bounded.

A failover takes about ``node_timeout_ms`` (failure detection) plus the replica's election
delay (0.5 to 1 s); keep ``node_timeout_ms`` at its default for clusters that must not fail
over by accident on a busy machine, and small (500) for failover tests.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.cluster import ClusterNode as _StartupNode
from redis.crc import key_slot

from idemkit.testing.redis_server import RedisServer, free_port

__all__ = ["ClusterNode", "RedisCluster"]


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One line of ``CLUSTER NODES`` as seen by a live node."""

    node_id: str
    port: int
    primary: bool
    primary_id: str | None  # for a replica: the id of its primary
    failed: bool
    slots: tuple[tuple[int, int], ...]

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)


def _parse_nodes(text: str) -> list[ClusterNode]:
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        flags = parts[2].split(",")
        address = parts[1].split("@")[0]
        slots = []
        for part in parts[8:]:
            if part.startswith("["):  # a slot being migrated
                continue
            start, _, end = part.partition("-")
            slots.append((int(start), int(end or start)))
        nodes.append(
            ClusterNode(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1]) if ":" in address else 0,
                primary="master" in flags,
                primary_id=None if parts[3] == "-" else parts[3],
                failed="fail" in flags or "fail?" in flags,
                slots=tuple(slots),
            )
        )
    return nodes


class RedisCluster:
    """A throwaway Redis Cluster of ``masters`` primaries with ``replicas`` replicas each."""

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        node_timeout_ms: int = 2000,
        appendonly: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        if masters < 3:
            raise ValueError("Redis Cluster needs at least 3 masters")
        if replicas < 0:
            raise ValueError("replicas must be >= 0")
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        # port of a primary -> ports of its replicas, as last seen healthy
        self._former_replicas: dict[int, set[int]] = {}
        # The cluster bus listens on port + 10000, so node ports must stay at or below 55535.
        self.nodes = [
            RedisServer(
                port=free_port(below=55536),
                appendonly=appendonly,
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(node_timeout_ms),
                    # A replica that lagged (paused, slow link) may still be promoted: the
                    # failover tests measure what that loses instead of waiting forever.
                    "--cluster-replica-validity-factor",
                    "0",
                    # Replicas sync at once (the default waits 5 s for more replicas to come).
                    "--repl-diskless-sync-delay",
                    "0",
                    *extra_args,
                ],
            )
            for _ in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """URL of a node that is alive (the cluster client discovers the others from it)."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                return node.url
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """Every node's address, for a client that must survive any one node's death."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    def client(self, **kwargs: Any) -> redis.RedisCluster:
        """A blocking cluster client that knows every node (so it survives any one's death)."""
        nodes = [
            _StartupNode("127.0.0.1", port)  # type: ignore[no-untyped-call]
            for _, port in self.startup_nodes
        ]
        return redis.RedisCluster(startup_nodes=nodes, **kwargs)

    def async_client(self, **kwargs: Any) -> aioredis.RedisCluster:
        """The ``redis.asyncio`` twin of :meth:`client`."""
        nodes = [aioredis.cluster.ClusterNode("127.0.0.1", port) for _, port in self.startup_nodes]
        return aioredis.RedisCluster(startup_nodes=nodes, **kwargs)

    def flush(self) -> None:
        """``FLUSHALL`` on every primary (replicas follow)."""
        for node in self.primaries():
            self._ask(node, "FLUSHALL")

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is required to form a cluster (package redis-tools)")
        addrs = [f"127.0.0.1:{node.port}" for node in self.nodes]
        replicas = ["--cluster-replicas", str(self.replicas)]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, *replicas, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        self.wait_ok(timeout)
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __iter__(self) -> Iterator[RedisServer]:
        return iter(self.nodes)

    def __enter__(self) -> RedisCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the cluster looks like ------------------------------------------------------------

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def _ask(self, node: RedisServer, *command: str) -> str:
        client = redis.Redis(
            port=node.port, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )
        try:
            return str(client.execute_command(*command))  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def _link_up(self, node: RedisServer) -> bool:
        client = redis.Redis(port=node.port, socket_timeout=2, socket_connect_timeout=2)
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    def _by_port(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of this cluster listens on {port}")

    def topology(self) -> list[ClusterNode]:
        """``CLUSTER NODES`` as the first live node that answers sees it."""
        error: Exception | None = None
        for node in self.alive():
            try:
                return _parse_nodes(self._ask(node, "CLUSTER", "NODES"))
            except (redis.RedisError, OSError) as exc:
                error = exc
        raise RuntimeError(f"no live cluster node answered CLUSTER NODES: {error}")

    def primaries(self) -> list[RedisServer]:
        """The live primaries, in no particular order."""
        return [
            self._by_port(n.port) for n in self.topology() if n.primary and not n.failed and n.slots
        ]

    def primary_for(self, key: str | bytes) -> RedisServer:
        """The primary serving ``key``'s slot (hash tags count: ``{tag}`` picks the slot)."""
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        for node in self.topology():
            if node.primary and not node.failed and node.serves(slot):
                return self._by_port(node.port)
        raise RuntimeError(f"no live primary serves slot {slot}")

    def replicas_of(self, primary: RedisServer) -> list[RedisServer]:
        nodes = self.topology()
        ids = {n.node_id for n in nodes if n.port == primary.port}
        return [self._by_port(n.port) for n in nodes if n.primary_id in ids and not n.failed]

    # -- faults ----------------------------------------------------------------------------------

    def kill_primary_for(self, key: str | bytes) -> RedisServer:
        """SIGKILL the primary serving ``key``'s slot; returns it (for :meth:`restart`)."""
        primary = self.primary_for(key)
        self._remember_replicas()
        primary.kill()
        return primary

    def wait_for_failover(self, killed: RedisServer, timeout: float = 20.0) -> RedisServer:
        """Wait until a replica of ``killed`` serves its slots and the cluster is ok; the new
        primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, LookupError, redis.RedisError, OSError):
                nodes = self.topology()
                old = next((n for n in nodes if n.port == killed.port), None)
                if old is not None and old.slots:
                    time.sleep(0.05)
                    continue
                successor = next(
                    (
                        n
                        for n in nodes
                        if n.primary
                        and not n.failed
                        and old is not None
                        and n.node_id != old.node_id
                        and self._was_replica_of(n, old)
                    ),
                    None,
                )
                if successor is not None and self._all_ok():
                    return self._by_port(successor.port)
            time.sleep(0.05)
        raise RuntimeError(f"no replica of the node on {killed.port} was promoted in {timeout}s")

    def _was_replica_of(self, node: ClusterNode, old: ClusterNode) -> bool:
        # The promoted replica took over the old primary's slots; the old one holds none now.
        return bool(node.slots) and node.port in self._former_replicas.get(old.port, set())

    def restart(self, node: RedisServer, timeout: float = 20.0) -> None:
        """Start a killed node again (same port, same ``nodes.conf``): it rejoins as a replica
        of whoever serves its former slots; waits until its replication link is up."""
        node.process = None
        node.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if self._link_up(node) and self._all_ok():
                    self._remember_replicas()
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the node on {node.port} did not rejoin within {timeout}s")

    # -- health ------------------------------------------------------------------------------------

    def _all_ok(self) -> bool:
        for node in self.alive():
            try:
                if "cluster_state:ok" not in self._ask(node, "CLUSTER", "INFO"):
                    return False
            except (redis.RedisError, OSError):
                return False
        return True

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every live node reports ``cluster_state:ok``, sees every slot served by a
        live primary, and (with replicas) every replica's link to its primary is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, redis.RedisError, OSError):
                if self._all_ok() and self._replicas_linked():
                    self._remember_replicas()
                    return
            time.sleep(0.05)
        raise RuntimeError("Redis Cluster did not reach cluster_state:ok")

    def _replicas_linked(self) -> bool:
        nodes = self.topology()
        replicas = [n for n in nodes if not n.primary and not n.failed]
        if len([n for n in nodes if n.primary and n.slots]) != self.masters:
            return False
        if len(replicas) < len(self.alive()) - self.masters:
            return False
        return all(self._link_up(self._by_port(replica.port)) for replica in replicas)

    def _remember_replicas(self) -> None:
        nodes = self.topology()
        by_id = {n.node_id: n for n in nodes}
        former: dict[int, set[int]] = {}
        for n in nodes:
            if n.primary_id is not None and n.primary_id in by_id:
                former.setdefault(by_id[n.primary_id].port, set()).add(n.port)
        self._former_replicas = former
