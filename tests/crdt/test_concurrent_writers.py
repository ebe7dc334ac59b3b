"""Eight processes write through the storage at once; nothing is lost."""

from __future__ import annotations

import multiprocessing
import time

from crdt import GCounter, ORMap, ORSet, PNCounter
from crdt.redis_store import SyncCrdtStore
from idemkit.testing import RedisServer

WORKERS = 8
OPS = 150


def _worker(url: str, worker: int) -> None:
    import redis

    client = redis.Redis.from_url(url)
    # All workers share the region id: the scripts make the region the replica.
    store = SyncCrdtStore(client, region="eu")
    deadline = time.monotonic() + 60
    for i in range(OPS):
        if time.monotonic() > deadline:
            raise TimeoutError("worker took too long")
        store.increment("hits", 1, kind=GCounter)
        store.increment("balance", 2**53 + i if i % 2 == 0 else -i)
        store.add("cart", f"w{worker}-{i}")
        if i % 3 == 0:
            store.remove("cart", f"w{worker}-{i}")
        if i % 10 == 0:
            store.update(
                "map",
                ORMap,
                lambda m: m.apply("eu", f"w{worker}", GCounter, lambda c: c.increment("eu", 1)),
            )
    client.close()


def test_eight_processes_lose_nothing(fresh_redis_server: RedisServer) -> None:
    url = fresh_redis_server.url
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(url, w)) for w in range(WORKERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(90)
        assert process.exitcode == 0

    import redis

    client = redis.Redis.from_url(url)
    store = SyncCrdtStore(client, region="eu")
    assert store.load("hits", GCounter).value == WORKERS * OPS
    balance = sum(2**53 + i if i % 2 == 0 else -i for i in range(OPS)) * WORKERS
    assert store.load("balance", PNCounter).value == balance
    expected_cart = {f"w{w}-{i}" for w in range(WORKERS) for i in range(OPS) if i % 3 != 0}
    assert store.load("cart", ORSet).value == expected_cart
    assert store.load("map", ORMap).value == {f"w{w}": OPS // 10 for w in range(WORKERS)}
    client.close()
