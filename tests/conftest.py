"""Shared fixtures: real redis-server processes on free loopback ports.

Topologies: the ``aredis`` and ``sync_redis`` clients talk to one of three deployments,
chosen by the ``topology`` fixture: ``single`` (one redis-server, the default), ``cluster``
(a Redis Cluster of three primaries with a replica each) or ``sentinel`` (a primary, a
replica and three sentinels; the clients come from ``Sentinel.master_for``). Tests marked
``@pytest.mark.topologies`` run on all three in every run; ``--topology=cluster`` (or
``sentinel``, ``all``) switches every test that uses those clients (``make soak`` runs
``all``). Tests that need one plain server (MONITOR, killing it, its connection pool) are
marked ``@pytest.mark.single_redis`` and never switch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from idemkit.testing import PostgresServer, RedisCluster, RedisServer, SentinelGroup
from idemkit.testing.sentinel import aclose_client, close_client

TOPOLOGIES = ("single", "cluster", "sentinel")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak tests")
    parser.addoption(
        "--topology",
        choices=(*TOPOLOGIES, "all"),
        default=None,
        help="run every test that uses the aredis/sync_redis clients on this Redis topology "
        "('all': on each of them); by default only tests marked 'topologies' run on all",
    )


# A test that also talks to the plain server itself (a proxy in front of it, its URL, a
# server it kills) compares the topology's clients with that one server: it stays single.
_SINGLE_SERVER_FIXTURES = frozenset({"redis_server", "redis_url", "fresh_redis_server"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "topology" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("single_redis") is not None:
        return
    if _SINGLE_SERVER_FIXTURES.intersection(metafunc.fixturenames):
        return
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if "topology" in (names.split(",") if isinstance(names, str) else names):
            return  # the test chose its topologies itself
    chosen = metafunc.config.getoption("--topology")
    if chosen == "all" or (
        chosen is None and metafunc.definition.get_closest_marker("topologies") is not None
    ):
        metafunc.parametrize("topology", TOPOLOGIES, indirect=True)
    elif chosen not in (None, "single"):
        metafunc.parametrize("topology", [chosen], indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip = pytest.mark.skip(reason="long soak: run with --soak (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the whole session; tests that break servers use ``fresh_redis_server``."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server, flushed before the test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def fresh_redis_server() -> Iterator[RedisServer]:
    """A dedicated server the test may stop, kill, pause or restart (AOF on)."""
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> str:
    """Which deployment ``aredis`` and ``sync_redis`` talk to (see the module docstring)."""
    return str(getattr(request, "param", "single"))


@pytest.fixture
async def aredis(topology: str, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A ``redis.asyncio`` client of an empty database on the chosen topology."""
    if topology == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        client: Any = cluster.async_client()
        yield client
        await client.aclose()
    elif topology == "sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        group.flush()
        client = group.async_client()
        yield client
        await aclose_client(client)
    else:
        client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        yield client
        await client.aclose()


@pytest.fixture
def sync_redis(topology: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """The blocking twin of ``aredis``."""
    if topology == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        client: Any = cluster.client()
        yield client
        client.close()
    elif topology == "sentinel":
        group: SentinelGroup = request.getfixturevalue("sentinel_group")
        group.flush()
        client = group.client()
        yield client
        close_client(client)
    else:
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        yield client
        client.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """Three primaries with one replica each; tests must not kill its nodes (failover tests
    start their own)."""
    with RedisCluster(replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    """One primary, one replica, three sentinels; tests must not kill its servers."""
    with SentinelGroup() as group:
        yield group


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL (initdb + pg_ctl on a free port) for the session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    """DSN of the session PostgreSQL with an empty ``public`` schema."""
    import psycopg

    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return postgres_server.dsn
