"""Replicas against a reference model of each type's intended semantics.

The model knows nothing about dots or contexts. It records every op with the set of ops its
replica had seen (``observed``) and computes what a replica *should* show from the set of
ops that reached it: an add survives unless an op on the same element observed it (so a
remove concurrent with an unrelated update stays removed, and an add wins over a remove that
did not see it); LWW shows the largest (HLC, replica) write; counters sum what they saw.
Deltas travel through a lossy network that drops, duplicates and reorders them; a dotted
delta is merged only once the receiver is causally ready for it (``DeltaMessage``), and
full-state merges happen too. After every step each replica must match the model.

Deletes start a new epoch: the model shows only the ops of the largest epoch a replica has
seen (delete wins over ops it did not see). Restarts lose a replica's state; it comes back
empty under a new incarnation id, and deltas it sent before may still arrive anywhere.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crdt import Crdt, DeltaMessage, LWWRegister, TombstonedElementError
from tests.crdt.strategies import (
    KINDS,
    REPLICAS,
    STATEFUL_SETTINGS,
    Op,
    apply_op,
    incarnation,
    ops,
)


@dataclass(frozen=True)
class Event:
    id: int
    replica: str
    op: Op
    observed: frozenset[int]
    cumulative: int = 0  # counters: this replica's running total for (key, sign) after the op
    order: Any = None  # LWW: the (HLC, replica) pair the write got
    epoch: int = 0  # the epoch the op was made in (a delete: the epoch it started)


def _target(op: Op) -> Any:
    """What an op is about: an element, a map key, or the whole register."""
    if op[0] == "add" and len(op) == 3:
        return op[1]
    if op[0] in ("add", "remove") or (op[0] == "inc" and isinstance(op[1], str)):
        return op[1]
    return None


class Model:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.events: dict[int, Event] = {}
        self.totals: dict[tuple[str, Any, str], int] = defaultdict(int)

    def record(self, replica: str, op: Op, observed: frozenset[int], state: Crdt) -> Event:
        cumulative = 0
        counting = self.kind in ("gcounter", "pncounter") and op[0] != "delete"
        if counting or (self.kind == "ormap" and op[0] == "inc"):
            amount = op[-1]
            sign = "n" if op[0] == "dec" or amount < 0 else "p"
            key = (replica, op[1] if self.kind == "ormap" else None, sign, state.epoch)
            self.totals[key] += abs(amount)
            cumulative = self.totals[key]
        order = state.order_key if isinstance(state, LWWRegister) else None
        event = Event(len(self.events), replica, op, observed, cumulative, order, state.epoch)
        self.events[event.id] = event
        return event

    def _survivors(self, seen: frozenset[int], kinds: tuple[str, ...]) -> list[Event]:
        events = [self.events[i] for i in seen]
        alive = []
        for event in events:
            if event.op[0] not in kinds:
                continue
            covered = any(
                event.id in other.observed and _target(other.op) == _target(event.op)
                for other in events
                if other.op[0] in ("add", "remove", "assign", "inc")
            )
            if not covered:
                alive.append(event)
        return alive

    def _count(self, seen: frozenset[int], key: Any, sign: str) -> int:
        best: dict[str, int] = {}
        for i in seen:
            event = self.events[i]
            if event.cumulative and _target(event.op) == key:
                this_sign = "n" if event.op[0] == "dec" or event.op[-1] < 0 else "p"
                if this_sign == sign:
                    best[event.replica] = max(best.get(event.replica, 0), event.cumulative)
        return sum(best.values())

    def value(self, seen: frozenset[int]) -> Any:
        # Only the newest epoch counts: a delete hides every op it did not see.
        epoch = max((self.events[i].epoch for i in seen), default=0)
        seen = frozenset(i for i in seen if self.events[i].epoch == epoch)
        events = [self.events[i] for i in seen]
        if self.kind == "gcounter":
            return self._count(seen, None, "p")
        if self.kind == "pncounter":
            return self._count(seen, None, "p") - self._count(seen, None, "n")
        if self.kind == "gset":
            return frozenset(e.op[1] for e in events if e.op[0] == "add")
        if self.kind == "twopset":
            added = {e.op[1] for e in events if e.op[0] == "add"}
            return frozenset(added - {e.op[1] for e in events if e.op[0] == "remove"})
        if self.kind == "orset":
            return frozenset(e.op[1] for e in self._survivors(seen, ("add",)))
        if self.kind == "mvregister":
            return sorted(repr(e.op[1]) for e in self._survivors(seen, ("assign",)))
        if self.kind == "lwwregister":
            writes = [e for e in events if e.order is not None]
            return max(writes, key=lambda e: e.order).op[1] if writes else None
        # ormap: keys are an add-wins set; counters never reset; the set value only grows.
        live = {_target(e.op) for e in self._survivors(seen, ("inc", "add"))}
        result: dict[Any, Any] = {}
        for key in live:
            if key == "s":
                result[key] = frozenset(e.op[2] for e in events if e.op[0] == "add")
            else:
                result[key] = self._count(seen, key, "p") - self._count(seen, key, "n")
        return result


def _observable(kind: str, state: Crdt) -> Any:
    if kind == "mvregister":
        return sorted(repr(v) for v in state.value)
    return state.value


def make_machine(kind: str) -> type[RuleBasedStateMachine]:
    replica_index = st.integers(0, len(REPLICAS) - 1)
    pick = st.integers(0, 10_000)

    class ReplicasMatchModel(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model(kind)
            self.states: list[Crdt] = [KINDS[kind]() for _ in REPLICAS]
            self.seen: list[frozenset[int]] = [frozenset() for _ in REPLICAS]
            self.inbox: list[list[tuple[int, DeltaMessage[Crdt]]]] = [[] for _ in REPLICAS]
            self.restarts = [0] * len(REPLICAS)

        @rule(index=replica_index, op=ops(kind))
        def local_op(self, index: int, op: Op) -> None:
            state = self.states[index]
            before = state.causal_context
            replica = incarnation(index, self.restarts[index])
            try:
                delta = apply_op(state, replica, op)
            except TombstonedElementError:
                return
            nothing = KINDS[kind]()
            nothing.epoch = state.epoch
            if op[0] == "remove" and delta == nothing:
                return  # removing what this replica does not hold is a no-op
            event = self.model.record(replica, op, self.seen[index], state)
            self.seen[index] = self.seen[index] | {event.id}
            for other in range(len(REPLICAS)):
                if other != index:
                    # Ship bytes, as the network would.
                    message = DeltaMessage.after(before, delta).to_bytes()
                    self.inbox[other].append((event.id, DeltaMessage.from_bytes(message)))

        def _take(self, dst: int, which: int, keep: bool) -> tuple[int, DeltaMessage[Crdt]]:
            box = self.inbox[dst]
            position = which % len(box)
            return box[position] if keep else box.pop(position)

        @precondition(lambda self: any(self.inbox))
        @rule(dst=replica_index, which=pick, duplicate=st.booleans())
        def deliver_delta(self, dst: int, which: int, duplicate: bool) -> None:
            if not self.inbox[dst]:
                return
            position = which % len(self.inbox[dst])
            event_id, message = self.inbox[dst][position]
            if not message.ready_for(self.states[dst]):
                return  # held back until an earlier delta or a full-state merge arrives
            if not duplicate:
                self.inbox[dst].pop(position)
            self.states[dst] |= message.delta
            self.seen[dst] = self.seen[dst] | {event_id}

        @precondition(lambda self: any(self.inbox))
        @rule(dst=replica_index, which=pick)
        def drop_delta(self, dst: int, which: int) -> None:
            if self.inbox[dst]:
                self._take(dst, which, keep=False)

        @rule(src=replica_index, dst=replica_index)
        def full_state_merge(self, src: int, dst: int) -> None:
            self.states[dst] |= self.states[src]
            self.seen[dst] = self.seen[dst] | self.seen[src]

        @rule(index=replica_index)
        def restart_without_state(self, index: int) -> None:
            # The replica loses everything it had; it comes back under a new incarnation.
            self.states[index] = KINDS[kind]()
            self.seen[index] = frozenset()
            self.restarts[index] += 1

        @rule(index=replica_index)
        def reload_from_bytes(self, index: int) -> None:
            state = self.states[index]
            self.states[index] = type(state).from_bytes(state.to_bytes())

        @rule()
        def anti_entropy_converges(self) -> None:
            everything = KINDS[kind]()
            for state in self.states:
                everything |= state
            all_seen = frozenset().union(*self.seen)
            assert _observable(kind, everything) == self.model.value(all_seen)
            for state in self.states:
                assert state | everything == everything

        @invariant()
        def replicas_match_model(self) -> None:
            for index, state in enumerate(self.states):
                expected = self.model.value(self.seen[index])
                assert _observable(kind, state) == expected, (REPLICAS[index], state)

    ReplicasMatchModel.__name__ = f"{kind.title()}Machine"
    return ReplicasMatchModel


def _testcase(kind: str) -> Any:
    machine = make_machine(kind)
    machine.TestCase.settings = STATEFUL_SETTINGS
    return machine.TestCase


TestGCounterModel = _testcase("gcounter")
TestPNCounterModel = _testcase("pncounter")
TestGSetModel = _testcase("gset")
TestTwoPSetModel = _testcase("twopset")
TestORSetModel = _testcase("orset")
TestMVRegisterModel = _testcase("mvregister")
TestLWWRegisterModel = _testcase("lwwregister")
TestORMapModel = _testcase("ormap")
