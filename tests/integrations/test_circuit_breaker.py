"""The circuit breaker's state machine: unit cases and a Hypothesis model against a fake clock."""

from __future__ import annotations

import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from idemkit.errors import ConfigurationError, IdemkitError
from idemkit.observe import Event
from integrations.circuit_breaker import BreakerState, CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_and_recovers_through_half_open() -> None:
    clock, events = Clock(), list[Event]()
    breaker = CircuitBreaker(
        failure_threshold=2, cooldown=10, name="shop", observer=events.append, clock=clock
    )
    breaker.before_call()
    breaker.record_failure()
    breaker.before_call()
    breaker.record_success()  # a success resets the count: failures must be in a row
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    clock.now += 4
    with pytest.raises(CircuitOpenError, match="open after 2 failures") as info:
        breaker.before_call()
    assert info.value.retry_after == pytest.approx(6)
    assert isinstance(info.value, IdemkitError)
    clock.now += 6
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpenError, match="trial call is in flight"):
        breaker.before_call()  # only one at a time
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert [(e.attrs["previous"], e.outcome, e.route) for e in events] == [
        ("closed", "open", "shop"),
        ("open", "half_open", "shop"),
        ("half_open", "closed", "shop"),
    ]


def test_an_abandoned_trial_frees_its_slot() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown=1, clock=clock)
    breaker.before_call()
    breaker.record_failure()
    clock.now += 1
    breaker.before_call()
    breaker.record_ignored()  # cancelled: no verdict
    breaker.before_call()  # a new trial may go
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_a_broken_observer_does_not_break_the_breaker() -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("metrics backend down")

    breaker = CircuitBreaker(failure_threshold=1, observer=broken)
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_bad_configuration_is_refused() -> None:
    for kwargs in ({"failure_threshold": 0}, {"cooldown": 0}, {"half_open_calls": 0}):
        with pytest.raises(ConfigurationError):
            CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_threads_share_one_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1000, cooldown=60)

    def hammer() -> None:
        for _ in range(200):
            breaker.before_call()
            breaker.record_failure()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert breaker.failures == 800 and breaker.state is BreakerState.CLOSED


class BreakerModel(RuleBasedStateMachine):
    """The breaker against a plain model of the documented state machine."""

    THRESHOLD, COOLDOWN, TRIALS = 3, 5.0, 2

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.events: list[Event] = []
        self.breaker = CircuitBreaker(
            failure_threshold=self.THRESHOLD,
            cooldown=self.COOLDOWN,
            half_open_calls=self.TRIALS,
            observer=self.events.append,
            clock=self.clock,
        )
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.in_flight = 0  # admitted calls without a verdict yet
        self.trials = 0
        self.transitions = 0

    def _move(self, state: str) -> None:
        self.state = state
        self.transitions += 1
        if state == "open":
            self.opened_at = self.clock.now
        if state == "closed":
            self.failures = 0
        if state == "half_open":
            self.trials = 0

    def _tick(self) -> None:
        if self.state == "open" and self.clock.now >= self.opened_at + self.COOLDOWN:
            self._move("half_open")

    @rule(seconds=st.floats(min_value=0, max_value=8, allow_nan=False))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def call(self) -> None:
        self._tick()
        allowed = self.state == "closed" or (
            self.state == "half_open" and self.trials < self.TRIALS
        )
        if allowed:
            self.breaker.before_call()
            self.in_flight += 1
            if self.state == "half_open":
                self.trials += 1
        else:
            with pytest.raises(CircuitOpenError):
                self.breaker.before_call()

    @precondition(lambda self: self.in_flight > 0)
    @rule(verdict=st.sampled_from(["success", "failure", "ignored"]))
    def finish(self, verdict: str) -> None:
        self.in_flight -= 1
        getattr(self.breaker, f"record_{verdict}")()
        if self.state == "half_open":
            self.trials = max(0, self.trials - 1)
            if verdict == "success":
                self._move("closed")
            elif verdict == "failure":
                self._move("open")
        elif self.state == "closed" and verdict == "success":
            self.failures = 0
        elif self.state == "closed" and verdict == "failure":
            self.failures += 1
            if self.failures >= self.THRESHOLD:
                self._move("open")

    @invariant()
    def agrees_with_the_model(self) -> None:
        self._tick()
        assert self.breaker.state.value == self.state
        assert len(self.events) == self.transitions
        if self.state == "closed":
            assert self.breaker.failures == self.failures


BreakerModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_breaker_follows_its_model = BreakerModel.TestCase
