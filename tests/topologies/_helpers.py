"""What tests on several topologies need to know about the servers behind ``aredis``."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from idemkit.testing import RedisCluster, RedisServer, SentinelGroup

WITH_REPLICAS = pytest.mark.parametrize("topology", ["cluster", "sentinel"], indirect=True)


def primary_of(request: pytest.FixtureRequest, topology: str, key: str) -> RedisServer:
    """The server that holds ``key`` (the primary serving its slot, or the Sentinel primary)."""
    if topology == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.primary_for(key)
    if topology == "sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        return group.primary()
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


def replica_of(request: pytest.FixtureRequest, topology: str, key: str) -> RedisServer:
    if topology == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.replicas_of(cluster.primary_for(key))[0]
    group: SentinelGroup = request.getfixturevalue("sentinel_group")
    primary = group.primary()
    return next(s for s in group.servers if s is not primary)


def command_calls(server: RedisServer, command: str) -> int:
    """How often ``server`` ran ``command`` (``INFO commandstats``)."""
    client = redis.Redis(port=server.port, socket_timeout=2)
    try:
        stats: dict[str, Any] = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))
