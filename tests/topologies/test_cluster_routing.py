"""The lease scripts on Redis Cluster: auto-pipelined per primary, and following the cluster
when a slot moves (MOVED) or is being migrated (ASK), on the session cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from idemkit.lease import CLAIMED, COMPLETED, Completion, LeaseStore, SyncLeaseStore
from idemkit.lock import FencedLock, SyncFencedLock
from idemkit.middleware import as_lease_store
from idemkit.pipeline import ClusterAutoPipeline, PipelinedLeaseStore, _NodePipeline, can_pipeline
from idemkit.testing import RedisCluster, RedisServer

pytestmark = pytest.mark.parametrize("topology", ["cluster"], indirect=True)


def _ask(server: RedisServer, *command: Any) -> Any:
    client = redis.Redis(port=server.port, socket_timeout=5)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def _node_id(server: RedisServer) -> str:
    return str(_ask(server, "CLUSTER", "MYID").decode())


@contextlib.contextmanager
def _migrating(cluster: RedisCluster, key: str) -> Iterator[tuple[RedisServer, RedisServer, int]]:
    """The slot of ``key`` half-migrated from its primary to another one; on exit the slot
    belongs to the other one (with the keys it held)."""
    source = cluster.primary_for(key)
    target = next(p for p in cluster.primaries() if p is not source)
    slot = key_slot(key.encode())
    _ask(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))
    _ask(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target))
    try:
        yield source, target, slot
    finally:
        while keys := _ask(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            _ask(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        owner = _node_id(target)
        for node in cluster.primaries():
            _ask(node, "CLUSTER", "SETSLOT", slot, "NODE", owner)
        cluster.wait_ok()


async def test_cluster_clients_are_auto_pipelined_per_primary(
    aredis: Any, redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert can_pipeline(aredis)
    store = as_lease_store(aredis)
    assert isinstance(store, PipelinedLeaseStore)
    assert isinstance(store._pipe, ClusterAutoPipeline)
    batches: Counter[str] = Counter()
    send = _NodePipeline._send

    async def counting(self: _NodePipeline, batch: list[Any]) -> None:
        batches[self.node.name] += 1
        await send(self, batch)

    monkeypatch.setattr(_NodePipeline, "_send", counting)
    keys = [store.record_key(f"spread-{i}") for i in range(96)]
    await store.claim(keys[0], b"fp", 5_000, 60_000)  # loads the script on one node
    batches.clear()
    claims = await asyncio.gather(*(store.claim(k, b"fp", 5_000, 60_000) for k in keys[1:]))
    assert {c.outcome for c in claims} == {CLAIMED}
    nodes = {redis_cluster.primary_for(k).port for k in keys}
    assert len(batches) == len(nodes) == 3  # every primary served its own keys
    # 95 claims (and the script loads on the two other nodes) in a few batches per node,
    # not one round trip each.
    assert sum(batches.values()) <= 3 * 6, batches


def _stores(aredis: Any, sync_client: redis.RedisCluster) -> dict[str, Any]:
    return {
        "pipelined": PipelinedLeaseStore(aredis),
        "pipelined+wait": PipelinedLeaseStore(aredis, replicas=1, replica_timeout_ms=2000),
        "plain+wait": LeaseStore(aredis, replicas=1, replica_timeout_ms=2000),
        "sync+wait": SyncLeaseStore(sync_client, replicas=1, replica_timeout_ms=2000),
    }


async def _call(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


@pytest.mark.parametrize("kind", ["pipelined", "pipelined+wait", "plain+wait", "sync+wait"])
async def test_a_moved_slot_is_followed(
    aredis: Any, sync_redis: Any, redis_cluster: RedisCluster, kind: str
) -> None:
    store = _stores(aredis, sync_redis)[kind]
    key = store.record_key(f"moving-{kind}")
    claim = await _call(store.claim(key, b"fp", 5_000, 60_000))
    with _migrating(redis_cluster, key) as (source, target, slot):
        pass  # on exit the slot and the record belong to target: the client's map is stale
    assert _ask(target, "EXISTS", key) == 1
    assert _ask(source, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    done = await _call(store.complete(key, claim.token, b"result", 60_000))
    assert done is Completion.STORED
    assert (await _call(store.claim(key, b"fp", 5_000, 60_000))).outcome == COMPLETED


@pytest.mark.parametrize("kind", ["pipelined", "pipelined+wait", "plain+wait", "sync+wait"])
async def test_a_slot_being_migrated_is_followed_with_asking(
    aredis: Any, sync_redis: Any, redis_cluster: RedisCluster, kind: str
) -> None:
    store = _stores(aredis, sync_redis)[kind]
    key = store.record_key(f"asking-{kind}")
    with _migrating(redis_cluster, key) as (source, target, slot):
        # A new key of a migrating slot belongs to the target: the source answers ASK.
        claim = await _call(store.claim(key, b"fp", 5_000, 60_000))
        assert claim.outcome == CLAIMED
        assert _ask(source, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        done = await _call(store.complete(key, claim.token, b"result", 60_000))
        assert done is Completion.STORED
    assert _ask(target, "EXISTS", key) == 1
    replay = await _call(store.claim(key, b"fp", 5_000, 60_000))
    assert replay.outcome == COMPLETED and replay.result == b"result"


async def test_the_eviction_checks_ask_every_primary(
    aredis: Any, sync_redis: Any, redis_cluster: RedisCluster
) -> None:
    """One evicting primary is one too many: CONFIG GET goes to every primary, not to the
    one node a Cluster client would pick for a keyless command."""
    assert await LeaseStore(aredis).eviction_policy() is None
    await aredis.initialize()
    defaults = {int(aredis.get_default_node().port), int(sync_redis.get_default_node().port)}
    # A primary neither client would ask a keyless command.
    evicting = next(p for p in redis_cluster.primaries() if p.port not in defaults)
    _ask(evicting, "CONFIG", "SET", "maxmemory-policy", "volatile-lru")
    try:
        assert await LeaseStore(aredis).eviction_policy() == "volatile-lru"
        assert SyncLeaseStore(sync_redis).eviction_policy() == "volatile-lru"
        assert "volatile-lru" in (await FencedLock(aredis, "x").check_server() or "")
        assert "volatile-lru" in (SyncFencedLock(sync_redis, "x").check_server() or "")
    finally:
        _ask(evicting, "CONFIG", "SET", "maxmemory-policy", "noeviction")
