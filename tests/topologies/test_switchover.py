"""The auto-pipeline follows a primary that changes: a Sentinel-managed client's dedicated
connection reconnects to the new primary, a Cluster client's batchers follow MOVED to the
promoted replica, whether the old primary died or was demoted (a manual failover)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

from idemkit.errors import StoreUnavailableError
from idemkit.lease import CLAIMED, Completion
from idemkit.middleware import as_lease_store
from idemkit.pipeline import AutoPipeline, PipelinedLeaseStore, can_pipeline
from idemkit.testing import RedisCluster, RedisServer, SentinelGroup
from idemkit.testing.sentinel import aclose_client


async def _cycles(
    store: PipelinedLeaseStore, stop: asyncio.Event, results: Counter[str], worker: str
) -> None:
    """Claim + complete fresh records until ``stop``; count what happened."""
    i = 0
    while not stop.is_set():
        i += 1
        key = store.record_key(f"switch-{worker}-{i}")
        try:
            claim = await asyncio.wait_for(store.claim(key, b"fp", 5_000, 60_000), 1.0)
            if claim.outcome != CLAIMED:
                # A claim that ran on the primary whose reply was lost with it, sent again:
                # its own lease answers busy. Never seen outside a switch.
                results["busy"] += 1
                continue
            done = await asyncio.wait_for(store.complete(key, claim.token, b"r", 60_000), 1.0)
            results["stored" if done is Completion.STORED else str(done)] += 1
        except (StoreUnavailableError, TimeoutError):
            results["unavailable"] += 1
            await asyncio.sleep(0.02)


async def _through_switch(
    store: PipelinedLeaseStore, switch: Callable[[], Awaitable[None]]
) -> tuple[Counter[str], Counter[str]]:
    """Run cycles through ``switch``; the counts during it and in the 0.5 s after it."""
    during: Counter[str] = Counter()
    after: Counter[str] = Counter()
    stop = asyncio.Event()
    workers = [asyncio.create_task(_cycles(store, stop, during, f"d{w}")) for w in range(8)]
    await asyncio.sleep(0.2)
    await switch()
    stop.set()
    await asyncio.gather(*workers)
    stop = asyncio.Event()
    workers = [asyncio.create_task(_cycles(store, stop, after, f"a{w}")) for w in range(8)]
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*workers)
    return during, after


@pytest.fixture
def sentinels() -> Any:
    with SentinelGroup() as group:
        yield group


async def test_sentinel_pipeline_reconnects_to_the_new_primary(sentinels: SentinelGroup) -> None:
    client = sentinels.async_client(socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        assert can_pipeline(client)  # Sentinel-managed connections are real connections
        store = as_lease_store(client)
        assert isinstance(store, PipelinedLeaseStore)
        old = sentinels.primary()

        async def switch() -> None:
            old.kill()
            await asyncio.to_thread(sentinels.wait_for_promotion, old)

        during, after = await _through_switch(store, switch)
        new = sentinels.primary()
        assert new is not old
        assert during["stored"] > 0 and during["unavailable"] > 0
        assert after["stored"] > 0 and set(after) == {"stored"}, after
        pipe = store._pipe
        assert isinstance(pipe, AutoPipeline) and pipe._conn is not None
        assert pipe._conn.port == new.port  # type: ignore[attr-defined]
    finally:
        await aclose_client(client)


async def test_sentinel_switchover_loses_what_the_demoted_primary_acknowledged_unless_waited(
    sentinels: SentinelGroup,
) -> None:
    """``SENTINEL FAILOVER`` promotes the replica while the old primary stays up; the
    sentinels demote it only seconds later (about ten here). Connections opened before keep
    writing to it, redis-py's and the auto-pipeline's alike, and what it acknowledged in
    between is thrown away when it resyncs as a replica. Waiting for a replica catches it:
    the old primary has none any more, so nothing is acknowledged there. Once it is demoted
    its READONLY answer sends the pipeline to the new primary without an error."""
    client = sentinels.async_client(socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        plain = as_lease_store(client)
        waiting = as_lease_store(client, replicas=1, replica_timeout_ms=50)
        acked: dict[str, list[str]] = {"plain": [], "waiting": []}
        stop = asyncio.Event()

        async def write(name: str, store: Any) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                key = store.record_key(f"{name}-{i}")
                with contextlib.suppress(StoreUnavailableError):
                    claim = await store.claim(key, b"fp", 5_000, 60_000)
                    if await store.complete(key, claim.token, b"r", 60_000):
                        acked[name].append(key)
                await asyncio.sleep(0.005)

        writers = [
            asyncio.create_task(write(n, s)) for n, s in (("plain", plain), ("waiting", waiting))
        ]
        old = sentinels.primary()
        await asyncio.sleep(0.2)
        admin = redis.Redis(port=sentinels.sentinels[0].port)
        try:
            admin.execute_command("SENTINEL", "FAILOVER", sentinels.service)
        finally:
            admin.close()
        await asyncio.to_thread(sentinels.wait_for_promotion, old)
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(_role, old) == "master":
            assert time.monotonic() < deadline, "the sentinels never demoted the old primary"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*writers)

        new = redis.Redis(port=sentinels.primary().port)
        try:
            lost = {
                name: sum(1 for key in keys if new.hget(key, "s") != b"d")
                for name, keys in acked.items()
            }
        finally:
            new.close()
        assert lost["plain"] > 0, lost  # acknowledged by the old primary, then discarded
        assert lost["waiting"] == 0, lost
        assert len(acked["waiting"]) > 0
        for name, store in (("plain", plain), ("waiting", waiting)):  # both moved over
            key = store.record_key(f"after-switch-{name}")
            claim = await store.claim(key, b"fp", 5_000, 60_000)
            assert claim.outcome == CLAIMED
    finally:
        await aclose_client(client)


def _role(server: RedisServer) -> str:
    client = redis.Redis(port=server.port, socket_timeout=2)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


@pytest.fixture
def cluster() -> Any:
    with RedisCluster(replicas=1, node_timeout_ms=500) as c:
        yield c


@pytest.mark.parametrize("how", ["kill", "manual"])
async def test_cluster_pipeline_follows_the_promoted_replica(
    cluster: RedisCluster, how: str
) -> None:
    client = cluster.async_client(socket_timeout=0.5, socket_connect_timeout=0.5)
    store = as_lease_store(client)
    assert isinstance(store, PipelinedLeaseStore)
    try:
        probe = store.record_key("switch-probe")
        old = cluster.primary_for(probe)
        replica = cluster.replicas_of(old)[0]

        async def switch() -> None:
            started = time.monotonic()
            if how == "kill":
                old.kill()
                await asyncio.to_thread(cluster.wait_for_failover, old)
            else:  # CLUSTER FAILOVER on the replica: a coordinated switch, old one demoted
                admin = redis.Redis(port=replica.port)
                try:
                    admin.execute_command("CLUSTER", "FAILOVER")
                finally:
                    admin.close()
                while cluster.primary_for(probe) is not replica:
                    assert time.monotonic() - started < 20
                    await asyncio.sleep(0.05)

        during, after = await _through_switch(store, switch)
        assert cluster.primary_for(probe) is replica
        assert during["stored"] > 0
        assert after["stored"] > 0 and set(after) == {"stored"}, after
        claim = await store.claim(probe, b"fp", 5_000, 60_000)
        assert await store.complete(probe, claim.token, b"r", 60_000) is Completion.STORED
    finally:
        await store.aclose()  # including the dead node's connections
        await client.aclose()
