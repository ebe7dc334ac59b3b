"""Throwaway servers on free loopback ports, for tests, load tests and benchmarks.

Used by the test suite, the load-test driver and the benchmarks; usable from an
application's own tests. Fault injection is explicit: :meth:`RedisServer.kill` (SIGKILL),
:meth:`RedisServer.stop` (SIGTERM), :meth:`RedisServer.pause` / :meth:`RedisServer.resume`
(SIGSTOP / SIGCONT) and :meth:`RedisServer.restart` on the same port and data directory.
:class:`LossyProxy` puts a network that delays, drops answers and injects errors between a
client and any of them. :class:`PostgresServer` is a throwaway PostgreSQL cluster
(``initdb`` + ``pg_ctl``). :class:`RedisCluster` (primaries with replicas) and
:class:`SentinelGroup` (a primary, replicas, three sentinels) come with failover helpers:
find and kill the primary serving a key, wait for a replica's promotion, restart the dead.
"""

from __future__ import annotations

from idemkit.testing.lossy_proxy import HTTP_503, LossyProxy, ProxyStats
from idemkit.testing.postgres import PostgresServer, postgres_bindir
from idemkit.testing.redis_cluster import ClusterNode, RedisCluster
from idemkit.testing.redis_server import RedisServer, free_port, redis_binary
from idemkit.testing.sentinel import SentinelGroup, SentinelServer

__all__ = [
    "HTTP_503",
    "ClusterNode",
    "LossyProxy",
    "PostgresServer",
    "ProxyStats",
    "RedisCluster",
    "RedisServer",
    "SentinelGroup",
    "SentinelServer",
    "free_port",
    "postgres_bindir",
    "redis_binary",
]
