"""Laws of ``@idempotent`` on plain functions, checked with Hypothesis.

* One call, one fingerprint: every way of writing the same call (positional, keyword,
  defaults spelled out or left out) fingerprints alike, and different arguments differ.
* Never twice: a stateful test drives a function through random results (unencodable ones
  included), random exceptions and concurrent callers of the same key against a real
  redis-server; a key whose call returned is never executed again.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from idemkit import idempotent
from idemkit.calls import CallSpec
from idemkit.errors import KeyReuseError, ResultNotStoredError
from idemkit.policy import IdempotencyPolicy

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.uuids()
    | st.datetimes(timezones=st.just(dt.UTC))
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.frozensets(st.integers(), max_size=4)
    ),
    max_leaves=12,
)


def target(order: Any, amount: Any = 1, *, note: Any = None) -> None:
    """The signature the fingerprint law is checked on."""


SPEC = CallSpec(
    target,
    lambda *a, **k: "k",
    namespace="laws",
    policy=IdempotencyPolicy(),
    serializer=None,
    exclude=(),
    observer=None,
)


@settings(max_examples=200, deadline=None)
@given(order=values, amount=values, note=values)
def test_equivalent_calls_have_one_fingerprint(order: Any, amount: Any, note: Any) -> None:
    forms = [
        ((order, amount), {"note": note}),
        ((order,), {"amount": amount, "note": note}),
        ((), {"order": order, "amount": amount, "note": note}),
        ((), {"note": note, "amount": amount, "order": order}),
    ]
    prints = {SPEC.fingerprint(args, kwargs) for args, kwargs in forms}
    assert len(prints) == 1
    if amount == 1 and type(amount) is int and note is None:
        assert SPEC.fingerprint((order,), {}) in prints  # defaults applied


@settings(max_examples=200, deadline=None)
@given(a=values, b=values)
def test_different_arguments_have_different_fingerprints(a: Any, b: Any) -> None:
    same = SPEC.fingerprint((a,), {}) == SPEC.fingerprint((b,), {})
    assert same == (_canon_equal(a, b))


def _canon_equal(a: Any, b: Any) -> bool:
    """Equality as the fingerprint sees it: same types all the way down (1 and 1.0 differ,
    True and 1 differ), same values, order-free maps and sets."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_canon_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_canon_equal(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and str(a) == str(b)  # 0.0 and -0.0 pack differently
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return bool(a == b)


# -- never twice ------------------------------------------------------------------------------


class Unencodable:
    """A result the serializer cannot store."""


class NeverTwice(RuleBasedStateMachine):
    """Random calls of one function over a few keys; concurrent duplicates included."""

    client: redis.Redis

    def __init__(self) -> None:
        super().__init__()
        self.client.flushall()
        self.executions: Counter[str] = Counter()
        self.returned: Counter[str] = Counter()  # executions that returned (not raised)
        self.plans: dict[str, Any] = {}
        self.lock = threading.Lock()
        namespace = f"never-twice-{uuid.uuid4().hex}"

        @idempotent(self.client, key=lambda key: key, namespace=namespace, lease=5)
        def work(key: str) -> Any:
            with self.lock:
                self.executions[key] += 1
                plan = self.plans[key]
            if plan == "raise":
                raise RuntimeError("planned failure")
            with self.lock:
                self.returned[key] += 1
            return Unencodable() if plan == "unencodable" else plan

        self.work = work

    @rule(
        key=st.sampled_from(["a", "b", "c"]),
        plan=st.sampled_from(["raise", "unencodable"]) | values,
        callers=st.integers(min_value=1, max_value=4),
    )
    def call(self, key: str, plan: Any, callers: int) -> None:
        with self.lock:
            self.plans[key] = plan  # only used if this call executes
        with concurrent.futures.ThreadPoolExecutor(callers) as pool:
            results = list(pool.map(self._attempt, [key] * callers))
        for outcome, value in results:
            if outcome == "error":
                assert (
                    isinstance(value, RuntimeError | ResultNotStoredError | KeyReuseError)
                    or type(value).__name__ == "RequestInFlightError"
                ), value

    def _attempt(self, key: str) -> tuple[str, Any]:
        try:
            return "ok", self.work(key)
        except Exception as exc:
            return "error", exc

    @invariant()
    def a_key_that_returned_never_runs_again(self) -> None:
        for key, count in self.returned.items():
            assert count <= 1, (key, count)


@pytest.mark.timeout(300)
def test_a_completed_key_never_runs_twice(sync_redis: redis.Redis) -> None:
    NeverTwice.client = sync_redis
    run_state_machine_as_test(
        NeverTwice,
        settings=settings(
            max_examples=25,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
