"""The Redis storage: server-side merges against the Python join, region ops, errors."""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from crdt import (
    GCounter,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
    TimestampReuseError,
    TwoPSet,
    TypeMismatchError,
)
from crdt.base import Crdt, registered_types
from crdt.changelog import entry_call
from crdt.object_merge import DST, Plan, copy_plan
from crdt.redis_store import CrdtStore, SyncCrdtStore
from idemkit.testing import RedisCluster
from tests.crdt.strategies import CRDT_SETTINGS, KINDS, systems


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("chunk", [2000, 3])
@CRDT_SETTINGS
@given(data=st.data())
def test_server_merge_equals_python_merge(
    kind: str, chunk: int, data: st.DataObject, sync_redis: redis.Redis
) -> None:
    """Differential: join random reachable states in Lua and in Python; same state.

    ``chunk=3`` forces the chunked join (live dots, then dropped dots, then the context)
    that large states take, on the same histories (deletes and restarts included)."""
    store = SyncCrdtStore(sync_redis, region="r", change_log=False, chunk=chunk)
    sync_redis.flushdb()
    system = data.draw(systems(kind))
    states = system.replicas + system.retired
    order = data.draw(st.permutations(range(len(states))))
    expected = KINDS[kind]()
    for index in order:
        store.merge("obj", states[index])
        expected |= states[index]
        assert store.load("obj", KINDS[kind]) == expected
    # Deltas in op order are causally ready for the merged state: merging them is a no-op.
    for _, delta, _ in system.deltas:
        assert not store.merge("obj", delta) or kind == "lwwregister"
    assert store.load("obj", KINDS[kind]) == expected


@CRDT_SETTINGS
@given(counts=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 2**80)), max_size=8))
def test_counters_beyond_2_53_are_exact_in_lua(
    counts: list[tuple[str, int]], sync_redis: redis.Redis
) -> None:
    store = SyncCrdtStore(sync_redis, region="r", change_log=False)
    sync_redis.flushdb()
    expected = GCounter()
    for replica, count in counts:
        state = GCounter({replica: count})
        store.merge("big", state)
        expected |= state
    # 2^53 + 1 over 2^53: a tonumber() max would see them equal and drop the +1.
    store.merge("big", GCounter({"a": 2**53}))
    store.merge("big", GCounter({"a": 2**53 + 1}))
    expected |= GCounter({"a": 2**53 + 1})
    assert store.load("big", GCounter) == expected


def test_increment_is_exact_string_arithmetic(sync_redis: redis.Redis) -> None:
    store = SyncCrdtStore(sync_redis, region="eu")
    store.increment("c", 2**53, kind=GCounter)
    store.increment("c", 1, kind=GCounter)
    assert store.increment("c", 2**64, kind=GCounter) == 2**64 + 2**53 + 1
    store.increment("pn", 2**60 + 7)
    store.increment("pn", -(2**60))
    assert store.load("pn", PNCounter).value == 7


async def test_async_region_ops(aredis: aioredis.Redis) -> None:
    store = CrdtStore(aredis, region="eu")
    await store.add("cart", "apple")
    await store.add("cart", "pear")
    assert await store.remove("cart", "apple")
    assert not await store.remove("cart", "plum")
    cart = await store.load("cart", ORSet)
    assert cart.value == frozenset({"pear"})
    await store.assign("title", "hello")
    await store.assign("title", "world")
    assert (await store.load("title", LWWRegister)).value == "world"
    await store.assign("mv", 1, kind=MVRegister)
    assert (await store.load("mv", MVRegister)).value == (1,)
    # The shards' streams logged each change for the syncer.
    logs = {store.keys(name).log for name in ("cart", "title", "mv")}
    assert sum([await aredis.xlen(log) for log in logs]) >= 6


async def test_ormap_check_and_set(aredis: aioredis.Redis) -> None:
    store = CrdtStore(aredis, region="eu")
    await store.update(
        "m", ORMap, lambda m: m.apply("eu", "x", PNCounter, lambda c: c.increment("eu", 2))
    )
    other = ORMap()
    other.apply("us", "y", GCounter, lambda c: c.increment("us", 5))
    assert await store.merge("m", other)
    assert (await store.load("m", ORMap)).value == {"x": 2, "y": 5}


async def test_type_confusion_and_timestamp_reuse_are_errors(aredis: aioredis.Redis) -> None:
    store = CrdtStore(aredis, region="eu")
    await store.increment("k", 1)
    with pytest.raises(TypeMismatchError):
        await store.add("k", "x")
    with pytest.raises(TypeMismatchError):
        await store.load("k", ORSet)
    await store.merge("reg", LWWRegister("a", Timestamp(5, 0), "x"))
    with pytest.raises(TimestampReuseError):
        await store.merge("reg", LWWRegister("b", Timestamp(5, 0), "x"))


def test_scripts_run_on_redis_cluster(redis_cluster: RedisCluster) -> None:
    client = redis.RedisCluster.from_url(redis_cluster.url)
    try:
        store = SyncCrdtStore(client, region="eu", change_log=False)
        for name in ("c1", "c2", "c3"):
            store.increment(name, 2**60)
            store.add(name + "s", name)
            store.remove(name + "s", name)
            store.add(name + "s", "kept")
            assert store.load(name, PNCounter).value == 2**60
            assert store.load(name + "s", ORSet).value == frozenset({"kept"})
    finally:
        client.close()


@pytest.mark.parametrize("kind", [ORSet, MVRegister])
def test_chunked_join_of_a_large_state_drops_what_it_removed(
    kind: type[ORSet] | type[MVRegister], sync_redis: redis.Redis
) -> None:
    store = SyncCrdtStore(sync_redis, region="r", change_log=False, chunk=4)
    before = kind()
    for i in range(20):
        if isinstance(before, ORSet):
            before.add("a", f"e{i}")
        else:
            before.assign(f"w{i % 3}", i)
    store.merge("o", before)
    after = before.copy()
    if isinstance(after, ORSet):
        for i in range(0, 20, 2):
            after.remove(f"e{i}")
        after.add("b", "new")
    else:
        after.assign("b", "last")
    store.merge("o", after)
    assert store.load("o", kind) == before | after


def _drive(plan: Plan, source: SyncCrdtStore, target: SyncCrdtStore) -> bool:
    reply = None
    try:
        while True:
            side, call = plan.send(reply)
            reply = (target if side == DST else source).execute(call)
    except StopIteration as stop:
        return bool(stop.value)


@pytest.mark.parametrize("kind", list(KINDS))
@CRDT_SETTINGS
@given(data=st.data())
def test_chunked_copy_between_regions_equals_python_join(
    kind: str, data: st.DataObject, sync_redis: redis.Redis
) -> None:
    """Copying one region's object into another in chunks of 2 (full passes, retries) is the
    join, whatever the two histories (deletes and restarts included); twice changes nothing."""
    sync_redis.flushdb()
    a = SyncCrdtStore(sync_redis, region="a", prefix="a:", change_log=False, chunk=2)
    b = SyncCrdtStore(sync_redis, region="b", prefix="b:", change_log=False, chunk=2)
    system = data.draw(systems(kind))
    states = system.replicas + system.retired
    left = data.draw(st.lists(st.sampled_from(states), max_size=3))
    right = data.draw(st.lists(st.sampled_from(states), max_size=3))
    expected = KINDS[kind]()
    for state in left:
        a.merge("obj", state)
        expected |= state
    for state in right:
        b.merge("obj", state)
        expected |= state
    plan = copy_plan("obj", chunk=2, max_drift_ms=60_000, types=registered_types())
    _drive(plan, a, b)
    copied = b.load("obj", KINDS[kind])
    assert copied == expected
    again = copy_plan("obj", chunk=2, max_drift_ms=60_000, types=registered_types())
    assert not _drive(again, a, b)
    assert b.load("obj", KINDS[kind]) == copied


_STORE_OPS = {
    "orset": st.one_of(
        st.tuples(st.just("add"), st.sampled_from("xyz")),
        st.tuples(st.just("remove"), st.sampled_from("xyz")),
    ),
    "pncounter": st.tuples(st.just("inc"), st.integers(-3, 2**64)),
    "lwwregister": st.tuples(st.just("assign"), st.sampled_from(["p", "q", "r"])),
    "mvregister": st.tuples(st.just("assign"), st.sampled_from(["p", "q"])),
    "twopset": st.one_of(
        st.tuples(st.just("add"), st.sampled_from("xyz")),
        st.tuples(st.just("remove"), st.sampled_from("xyz")),
    ),
}


def _store_op(store: SyncCrdtStore, kind: type[Crdt], op: tuple[Any, ...]) -> None:
    if op[0] == "delete":
        store.delete("obj", kind)
    elif op[0] == "inc":
        store.increment("obj", op[1], kind)
    elif op[0] == "assign":
        store.assign("obj", op[1], kind)
    elif op[0] == "add":
        store.add("obj", op[1], kind)
    elif kind is TwoPSet and op[1] not in store.load("obj", TwoPSet).value:
        pass  # a TwoPSet removes only what it holds
    else:
        store.remove("obj", op[1], kind)


@pytest.mark.parametrize("kind", list(_STORE_OPS))
@CRDT_SETTINGS
@given(data=st.data())
def test_replaying_a_change_log_in_any_order_gives_the_join(
    kind: str, data: st.DataObject, sync_redis: redis.Redis
) -> None:
    sync_redis.flushdb()
    cls = KINDS[kind]
    ops = st.one_of(_STORE_OPS[kind], st.just(("delete",)))
    a = SyncCrdtStore(sync_redis, region="a", prefix="a:", shards=1)
    b = SyncCrdtStore(sync_redis, region="b", prefix="b:", shards=1, change_log=False)
    for op in data.draw(st.lists(ops, max_size=8)):
        _store_op(a, cls, op)
    for op in data.draw(st.lists(ops, max_size=4)):
        _store_op(b, cls, op)
    expected = a.load("obj", cls) | b.load("obj", cls)
    entries = [fields for _, fields in sync_redis.xrange(a.layout.log_key(0))]
    twice = data.draw(st.lists(st.sampled_from(entries))) if entries else []
    for fields in data.draw(st.permutations(entries + twice)):
        call = entry_call(fields, registered_types(), 60_000)
        assert call is not None
        b.execute(call)
    assert b.load("obj", cls) == expected
