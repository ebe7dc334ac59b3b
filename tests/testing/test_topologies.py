"""The Cluster and Sentinel fixtures describe the deployments they started truthfully."""

from __future__ import annotations

import redis

from idemkit.testing import RedisCluster, SentinelGroup


def test_the_cluster_has_three_primaries_each_with_a_replica(redis_cluster: RedisCluster) -> None:
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    for primary in primaries:
        assert len(redis_cluster.replicas_of(primary)) == 1
    client = redis_cluster.client()
    try:
        for i in range(20):
            key = f"where-{i}"
            client.set(key, "x")
            owner = redis.Redis(port=redis_cluster.primary_for(key).port)
            try:
                assert owner.exists(key) == 1
            finally:
                owner.close()
            # Hash tags pick the slot: every key of one tag lives on one primary.
            assert redis_cluster.primary_for(f"a:{{{key}}}") is redis_cluster.primary_for(key)
    finally:
        client.close()


def test_the_sentinels_agree_on_the_primary_and_see_the_replica(
    sentinel_group: SentinelGroup,
) -> None:
    primary = sentinel_group.primary()
    replica = next(s for s in sentinel_group.servers if s is not primary)
    client = redis.Redis(port=replica.port)
    try:
        info = client.info("replication")
    finally:
        client.close()
    assert info["role"] == "slave" and info["master_port"] == primary.port
    assert info["master_link_status"] == "up"
    assert len(sentinel_group.sentinel_addresses) == 3
