"""Issue 13, pure-Python part: findings 1, 6 and 7 as the types see them (no Redis).

Each test is named after the finding it pins; every one failed on the code before the fix.
"""

from __future__ import annotations

import time

import pytest

from crdt import (
    ClockDriftError,
    CrdtCodecError,
    DotReuseError,
    GCounter,
    HybridClock,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    Timestamp,
    TimestampReuseError,
    new_replica_id,
    region_of,
)
from crdt.codec import pack_envelope
from crdt.hlc import wall_clock_ms

TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000


# Finding 1: a replica that comes back with lost state reuses its ids.


def test_finding1_python_replica_restarted_without_state_gets_a_new_id() -> None:
    first = new_replica_id("eu")
    second = new_replica_id("eu")
    assert first != second
    assert region_of(first) == region_of(second) == "eu"

    counter, other = GCounter(), GCounter()
    other |= counter.increment(first, 10)
    # "eu" restarts without its saved state: a fresh counter under a fresh id.
    restarted = GCounter()
    restarted.increment(second, 3)
    other |= restarted
    assert other.value == 13, "the +3 after the restart is not swallowed by max()"


def test_finding1_restarted_orset_replica_keeps_both_adds() -> None:
    eu, us = ORSet(), ORSet()
    us |= eu.add(new_replica_id("eu"), "a")
    eu = ORSet()  # restarted empty
    eu.add(new_replica_id("eu"), "b")
    eu |= us
    us |= eu
    assert eu == us and eu.value == frozenset({"a", "b"})


def test_finding1_dot_reuse_is_detected_and_raised() -> None:
    eu, us = ORSet(), ORSet()
    us |= eu.add("eu", "a")
    reborn = ORSet()  # the same id, minting (eu, 1) again for another element
    reborn.add("eu", "b")
    with pytest.raises(DotReuseError, match="eu"):
        _ = us | reborn
    with pytest.raises(DotReuseError):
        _ = reborn | us

    mv, mv_reborn = MVRegister(), MVRegister()
    mv.assign("eu", 1)
    mv_reborn.assign("eu", 2)
    with pytest.raises(DotReuseError):
        _ = mv | mv_reborn

    m, m_reborn = ORMap(), ORMap()
    m.apply("eu", "k1", GCounter, lambda c: c.increment("eu", 1))
    m_reborn.apply("eu", "k2", GCounter, lambda c: c.increment("eu", 1))
    with pytest.raises(DotReuseError):
        _ = m | m_reborn


def test_finding1_region_ids_leave_room_for_the_incarnation() -> None:
    assert len(new_replica_id("r" * 53)) == 64
    with pytest.raises(ValueError, match="53"):
        new_replica_id("r" * 54)


# Finding 6: no bound on clock drift for LWW.


def test_finding6_lww_refuses_a_timestamp_beyond_max_drift() -> None:
    now = wall_clock_ms()
    register = LWWRegister("mine", Timestamp(now, 0), "eu")
    future = LWWRegister("ten years ahead", Timestamp(now + TEN_YEARS_MS, 0), "us")
    with pytest.raises(ClockDriftError, match="max_drift_ms"):
        register.receive(future)
    assert register.value == "mine"
    # Within the bound it is accepted; the bound is configurable.
    register.receive(LWWRegister("soon", Timestamp(now + 1_000, 0), "us"))
    assert register.value == "soon"
    register.receive(future, max_drift_ms=2 * TEN_YEARS_MS)
    assert register.value == "ten years ahead"


def test_finding6_assign_and_clock_check_drift() -> None:
    now = wall_clock_ms()
    with pytest.raises(ClockDriftError):
        LWWRegister().assign("eu", "x", timestamp=Timestamp(now + TEN_YEARS_MS, 0))
    clock = HybridClock(now_ms=lambda: 1_000, max_drift_ms=500)
    clock.observe(Timestamp(1_400, 0))
    with pytest.raises(ClockDriftError):
        clock.observe(Timestamp(1_600, 0))


def test_finding6_out_of_range_timestamps_are_refused_when_decoding() -> None:
    for wall, logical in [(2**64 - 1, 0), (2**63, 0), (5, 2**63), (-1, 0), (True, 0)]:
        raw = pack_envelope(LWWRegister.TYPE_TAG, 1, [wall, logical, "eu", "v"])
        with pytest.raises(CrdtCodecError):
            LWWRegister.from_bytes(raw)
    with pytest.raises(ValueError):
        LWWRegister("v", Timestamp(2**63, 0), "eu")


# Finding 7: the smaller ones.


def test_finding7_dict_register_values_are_canonical() -> None:
    ts = Timestamp(5, 0)
    a = LWWRegister({"a": 1, "b": {"y": 2, "x": 1}}, ts, "eu")
    b = LWWRegister({"b": {"x": 1, "y": 2}, "a": 1}, ts, "eu")
    assert a == b and a.to_bytes() == b.to_bytes()
    assert a | b == b | a
    m1, m2 = MVRegister(), MVRegister()
    m1.assign("eu", {"z": 1, "a": 2})
    m2.assign("eu", {"a": 2, "z": 1})
    assert m1.to_bytes() == m2.to_bytes()


def test_finding7_lww_timestamp_reuse_compares_bytes_not_equality() -> None:
    ts = Timestamp(5, 0)
    with pytest.raises(TimestampReuseError):
        _ = LWWRegister(True, ts, "eu") | LWWRegister(1, ts, "eu")
    with pytest.raises(TimestampReuseError):
        _ = LWWRegister(1, ts, "eu") | LWWRegister(1.0, ts, "eu")


@pytest.mark.parametrize("counter", ["1", 1.9, True, 0, 2**63])
def test_finding7_dot_counters_must_be_positive_ints(counter: object) -> None:
    raw = pack_envelope(ORSet.TYPE_TAG, 1, [[["x", [["eu", counter]]]], [[], []]])
    with pytest.raises(CrdtCodecError):
        ORSet.from_bytes(raw)
    raw = pack_envelope(ORSet.TYPE_TAG, 1, [[], [[["eu", counter]], []]])
    with pytest.raises(CrdtCodecError):
        ORSet.from_bytes(raw)


def test_finding7_counters_take_ints_only() -> None:
    with pytest.raises(ValueError, match="int"):
        GCounter({"eu": "5"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        PNCounter({"eu": 1.5})  # type: ignore[dict-item]
    for raw_count in ["05", "5", "-1", 5.0]:
        raw = pack_envelope(GCounter.TYPE_TAG, 1, [["eu", raw_count]])
        with pytest.raises(CrdtCodecError):
            GCounter.from_bytes(raw)
    big = GCounter({"eu": 2**70})
    assert GCounter.from_bytes(big.to_bytes()) == big


def test_finding7_orset_add_does_not_copy_the_set() -> None:
    s = ORSet()
    entries = s.entries
    start = time.perf_counter()
    for i in range(16_000):
        s.add("eu", i)
    elapsed = time.perf_counter() - start
    assert s.entries is entries, "add mutates in place"
    assert len(s.value) == 16_000
    # Was 1.7 s (a dict copy per add); linear now, with a wide margin for a busy machine.
    assert elapsed < 1.0, elapsed
    entries = s.entries
    s.remove(5)
    assert s.entries is entries and 5 not in s
