"""Concrete semantics of each type, the cases users ask about."""

from __future__ import annotations

import pytest

import crdt
from crdt import (
    CrdtCodecError,
    GCounter,
    GSet,
    HybridClock,
    InvalidReplicaIdError,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
    TimestampReuseError,
    TombstonedElementError,
    TwoPSet,
    TypeMismatchError,
    UnsupportedValueError,
)
from idemkit.errors import CodecError, IdemkitError


def test_public_api_is_sorted_and_importable() -> None:
    assert crdt.__all__ == sorted(crdt.__all__)
    for name in crdt.__all__:
        assert getattr(crdt, name) is not None


def test_counters_beyond_64_bits_stay_exact() -> None:
    a, b = GCounter(), PNCounter()
    a.increment("eu", 2**53 + 1)
    a.increment("eu", 2**70)
    b.decrement("us", 2**64 + 3)
    assert a.value == 2**70 + 2**53 + 1
    assert GCounter.from_bytes(a.to_bytes()).value == a.value
    assert PNCounter.from_bytes(b.to_bytes()).value == -(2**64 + 3)


def test_orset_concurrent_add_wins_and_remove_leaves_no_tombstone() -> None:
    eu, us = ORSet(), ORSet()
    us |= eu.add("eu", "apple")
    removed = us.remove("apple")  # us saw the first add only
    readded = eu.add("eu", "apple")  # concurrent re-add with a fresh dot
    eu |= removed
    us |= readded
    assert eu == us
    assert eu.value == frozenset({"apple"})
    us |= us.remove("apple")
    eu |= us
    assert eu.value == frozenset()
    assert eu.entries == {}, "a removal keeps nothing per element"


def test_orset_remove_concurrent_with_unrelated_add_stays_removed() -> None:
    eu, us = ORSet(), ORSet()
    us |= eu.add("eu", "x")
    eu.remove("x")
    us.add("us", "y")
    assert (eu | us).value == frozenset({"y"})


def test_twopset_never_readds() -> None:
    s = TwoPSet()
    s.add("x")
    s.remove("x")
    with pytest.raises(TombstonedElementError, match="ORSet"):
        s.add("x")


def test_lww_later_write_wins_despite_a_slow_clock() -> None:
    fast, slow = LWWRegister(), LWWRegister()
    slow |= fast.assign("eu", "first", clock=HybridClock(now_ms=lambda: 10_000))
    # "us" read the register, then wrote with a clock 9 s behind: it still wins.
    slow.assign("us", "second", clock=HybridClock(now_ms=lambda: 1_000))
    assert (fast | slow).value == "second"


def test_lww_ties_break_by_replica_and_reuse_is_an_error() -> None:
    a = LWWRegister("x", Timestamp(5, 0), "a")
    b = LWWRegister("y", Timestamp(5, 0), "b")
    assert (a | b).value == (b | a).value == "y"
    with pytest.raises(TimestampReuseError, match="reused"):
        _ = a | LWWRegister("z", Timestamp(5, 0), "a")


def test_mvregister_keeps_concurrent_values() -> None:
    a, b = MVRegister(), MVRegister()
    a.assign("a", 1)
    b.assign("b", 2)
    both = a | b
    assert sorted(both.value) == [1, 2]
    both.assign("a", 3)
    assert both.value == (3,)


def test_ormap_of_counters_and_sets() -> None:
    cart = ORMap()
    cart.apply("eu", "apple", PNCounter, lambda c: c.increment("eu", 2))
    cart.apply("eu", "tags", ORSet, lambda s: s.add("eu", "gift"))
    assert cart.value == {"apple": 2, "tags": frozenset({"gift"})}
    with pytest.raises(TypeMismatchError):
        cart.apply("eu", "apple", ORSet, lambda s: s.add("eu", "x"))
    cart.remove("apple")
    assert "apple" not in cart.value


def test_errors_are_specific_and_rooted() -> None:
    with pytest.raises(InvalidReplicaIdError):
        GCounter().increment("bad id!", 1)
    with pytest.raises(UnsupportedValueError):
        GSet().add(1.5)
    with pytest.raises(UnsupportedValueError):
        LWWRegister().assign("a", object())
    with pytest.raises(TypeMismatchError):
        _ = GSet() | GCounter()  # type: ignore[operator]
    with pytest.raises(CrdtCodecError, match="not a GSet") as info:
        GSet.from_bytes(GCounter().to_bytes())
    assert isinstance(info.value, CodecError) and isinstance(info.value, IdemkitError)
    for junk in [b"", b"\x00", b"hello world", b"\x93\x01\x02\x03\x00\x00\x00\x00"]:
        with pytest.raises(CrdtCodecError):
            ORSet.from_bytes(junk)


def test_reprs_are_readable() -> None:
    s = ORSet()
    s.add("a", "x")
    assert repr(s) == "ORSet(['x'], context=CausalContext(vv={'a': 1}, cloud=[]))"
    c = GCounter()
    c.increment("a", 3)
    assert repr(c) == "GCounter(value=3, counts={'a': 3})"


def test_delete_wins_over_concurrent_writes_and_keeps_later_ones() -> None:
    eu, us = ORSet(), ORSet()
    us |= eu.add("eu", "old")
    gone = eu.delete()  # eu deletes the cart...
    us.add("us", "concurrent")  # ...while us, not having seen it, adds to the old one
    after = eu.add("eu", "new")
    us |= gone
    us |= after
    eu |= us
    assert eu == us and eu.value == frozenset({"new"}) and eu.epoch == 1
    # Two replicas deleting concurrently reach the same epoch; their later writes join.
    a, b = PNCounter(), PNCounter()
    a.delete()
    b.delete()
    a.increment("a", 2)
    b.increment("b", 3)
    assert (a | b).value == 5 and (a | b).epoch == 1


def test_epoch_travels_in_bytes_and_old_bytes_still_read() -> None:
    s = GCounter()
    old_bytes = s.to_bytes()
    s.delete()
    s.increment("eu", 4)
    back = GCounter.from_bytes(s.to_bytes())
    assert back == s and back.epoch == 1 and back.value == 4
    assert GCounter.from_bytes(old_bytes).epoch == 0
    lww = LWWRegister()
    lww.delete()
    lww.assign("eu", "v", timestamp=Timestamp(1, 0))
    assert lww.value == "v", "a write after a delete is not mistaken for a stale one"
