"""Join laws, convergence, deltas and bytes for every CRDT type, on reachable states."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdt import Crdt, CrdtCodecError, decode
from tests.crdt.strategies import CRDT_SETTINGS, KINDS, System, systems

pytestmark = pytest.mark.parametrize("kind", list(KINDS))


def _three(system: System) -> tuple[Crdt, Crdt, Crdt]:
    a, b, c = system.replicas
    return a, b, c


@CRDT_SETTINGS
@given(data=st.data())
def test_merge_is_commutative_associative_idempotent(kind: str, data: st.DataObject) -> None:
    a, b, c = _three(data.draw(systems(kind)))
    assert a | b == b | a
    assert (a | b) | c == a | (b | c)
    assert a | a == a
    joined = a | b
    assert joined | a == joined, "a merge is inflationary: it never loses what a had"


@CRDT_SETTINGS
@given(data=st.data())
def test_any_merge_order_converges(kind: str, data: st.DataObject) -> None:
    system = data.draw(systems(kind))
    orders = [data.draw(st.permutations(range(3))) for _ in range(3)]
    finals = []
    for order in orders:
        state = system.replicas[order[0]].copy()
        for index in order[1:]:
            state |= system.replicas[index]
        finals.append(state)
    assert finals[0] == finals[1] == finals[2]
    assert finals[0].value == finals[1].value


@CRDT_SETTINGS
@given(data=st.data())
def test_delta_carries_the_update(kind: str, data: st.DataObject) -> None:
    system = data.draw(systems(kind))
    for before, delta, after in system.deltas:
        assert before | delta == after
        assert after | delta == after, "a delta applied twice changes nothing"
        # Merged into any replica that knew the state it was made from, a delta gives the
        # same result as merging the full state after the op.
        other = data.draw(st.sampled_from(system.replicas)) | before
        assert other | delta == other | after


@CRDT_SETTINGS
@given(data=st.data())
def test_deltas_alone_in_any_order_equal_full_states(kind: str, data: st.DataObject) -> None:
    system = data.draw(systems(kind))
    deltas = data.draw(st.permutations([d for _, d, _ in system.deltas]))
    from_deltas = KINDS[kind]()
    for delta in deltas:
        from_deltas |= delta
    full = KINDS[kind]()
    for replica in [*system.replicas, *system.retired]:
        full |= replica
    assert from_deltas == full


@CRDT_SETTINGS
@given(data=st.data())
def test_bytes_round_trip_is_identity_and_stable(kind: str, data: st.DataObject) -> None:
    system = data.draw(systems(kind))
    for state in [*system.replicas, *(d for _, d, _ in system.deltas)]:
        raw = state.to_bytes()
        back = type(state).from_bytes(raw)
        assert back == state
        assert back.value == state.value
        assert back.to_bytes() == raw
        assert decode(raw) == state


@CRDT_SETTINGS
@given(data=st.data())
def test_corrupt_bytes_raise_codec_error(kind: str, data: st.DataObject) -> None:
    state = data.draw(systems(kind)).replicas[0]
    raw = bytearray(state.to_bytes())
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CrdtCodecError):
        type(state).from_bytes(bytes(raw))
    with pytest.raises(CrdtCodecError):
        type(state).from_bytes(bytes(raw[: data.draw(st.integers(0, len(raw) - 1))]))
