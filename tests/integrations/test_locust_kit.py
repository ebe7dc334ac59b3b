"""The Locust kit's logic, in process: retries, stories, per-key checks, tallies, report.

Nothing here imports Locust (whose import monkey-patches the process with gevent): the flow
runs on a fake transport with a fake clock. Real Locust runs are in test_locust_runs.py.
"""

from __future__ import annotations

import email.utils
import json
import random
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idemkit.errors import ConfigurationError
from integrations.locust import (
    Answer,
    AnswerRules,
    Mix,
    Plan,
    RetryPolicy,
    Route,
    Verification,
    parse_retry_after,
    write_report,
)
from integrations.locust.checks import CheckContext, run_checks
from integrations.locust.flow import Flow, Sent
from integrations.locust.operation import Operation
from integrations.locust.tally import Tally, bucket_ms

ROOT = Path(__file__).resolve().parents[2]
JSON = {"content-type": "application/json"}
REPLAY = {**JSON, "idempotent-replayed": "true"}


def problem(status: int, slug: str, **headers: str) -> Answer:
    body = json.dumps({"type": f"urn:idemkit:problem:{slug}", "status": status}).encode()
    return Answer(status, {"content-type": "application/problem+json", **headers}, body)


def ok(doc: Mapping[str, Any], status: int = 201, replayed: bool = False) -> Answer:
    return Answer(status, REPLAY if replayed else JSON, json.dumps(doc).encode())


# -- Retry-After and backoff ------------------------------------------------------------------


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0 ", now) == 0.0
    in_five = email.utils.formatdate(now + 5, usegmt=True)
    assert parse_retry_after(in_five, now) == pytest.approx(5.0)
    in_the_past = email.utils.formatdate(now - 60, usegmt=True)
    assert parse_retry_after(in_the_past, now) == 0.0
    for junk in (None, "", "soon", "-1", "1.5", "Mon, 99 Foo 2024 00:00:00 GMT"):
        assert parse_retry_after(junk, now) is None


@given(st.integers(min_value=0, max_value=10**7), st.floats(min_value=0, max_value=2e9))
def test_retry_after_round_trips_both_forms(seconds: int, now: float) -> None:
    assert parse_retry_after(str(seconds), now) == seconds
    date = email.utils.formatdate(int(now) + seconds, usegmt=True)
    assert parse_retry_after(date, int(now)) == pytest.approx(seconds)


@given(
    st.integers(min_value=0, max_value=40),
    st.one_of(st.none(), st.floats(min_value=0, max_value=600)),
    st.integers(),
)
def test_backoff_honours_retry_after_and_its_own_ceiling(
    attempt: int, retry_after: float | None, seed: int
) -> None:
    policy = RetryPolicy(backoff=0.05, max_backoff=2.0)
    delay = policy.delay(attempt, retry_after, random.Random(seed))
    if retry_after is None:
        assert 0.025 <= delay <= 2.0
    else:
        assert retry_after <= delay <= retry_after * 1.1 + 1e-9


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0}, {"max_attempts": 0}, {"backoff": 3, "max_backoff": 1}, {"statuses": {99}}],
)
def test_retry_policy_refuses_nonsense(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)


# -- routes and mixes -------------------------------------------------------------------------


def test_route_fills_its_path_and_names_rows_by_template() -> None:
    route = Route(
        "post", "/counters/{name}/increment", params=lambda: {"name": "likes"}, body=lambda: {}
    )
    prepared = route.prepare()
    assert route.label == "POST /counters/{name}/increment"
    assert prepared.path == "/counters/likes/increment"
    assert prepared.body == b"{}"
    with pytest.raises(ConfigurationError, match="params"):
        Route("POST", "/counters/{name}")
    with pytest.raises(ConfigurationError):
        Mix(duplicates=1.5)


@pytest.mark.parametrize("body", [{"a": 1}, [1, 2], "text", 7, b"raw bytes"])
def test_a_reused_key_always_carries_a_different_body(body: Any) -> None:
    route = Route("POST", "/x", body=lambda: body)
    original = route.prepare()
    assert route.reused(original, random.Random(1)).body != original.body


def test_mix_draws_its_shares() -> None:
    rng = random.Random(7)
    mix = Mix(duplicates=0.5, abandon=1.0, late_retry=0.25, reuse=0.0)
    plans = [mix.draw(rng) for _ in range(4000)]
    assert 0.45 < sum(p.duplicates for p in plans) / 4000 < 0.55
    assert all(p.abandon != p.duplicates for p in plans)  # never both
    assert 0.2 < sum(p.late_retry for p in plans) / 4000 < 0.3
    assert not any(p.reuse for p in plans)


# -- the flow on a fake transport --------------------------------------------------------------


@dataclass
class Reported:
    name: str
    failure: str | None


@dataclass
class FakeTransport:
    """Answers from ``respond``; time passes only by sleeps and by each send's ``latency``."""

    respond: Callable[[str, bytes, Mapping[str, str], float], Answer]
    latency: float = 0.01
    clock: float = 0.0
    sent: list[tuple[str, bytes, dict[str, str], float]] = field(default_factory=list)
    reported: list[Reported] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)

    def send(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Sent:
        self.sent.append((path, body, dict(headers), timeout))
        answer = self.respond(path, body, headers, timeout)
        self.clock += self.latency
        return Sent(answer, self.latency, 0.0)

    def report(self, method: str, name: str, sent: Sent, failure: str | None) -> None:
        self.reported.append(Reported(name, failure))

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock += seconds

    def together(self, jobs: Sequence[Callable[[], None]], timeout: float) -> None:
        for job in jobs:
            job()

    def now(self) -> float:
        return self.clock


def scripted(*answers: Answer) -> Callable[..., Answer]:
    queue = list(answers)

    def respond(*_: Any) -> Answer:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return respond


class IdempotentModel:
    """A correct idempotent service: stores the first answer per key, 422 on another body."""

    def __init__(self, *, in_flight_first: int = 0) -> None:
        self.stored: dict[str, tuple[bytes, Answer]] = {}
        self.executions = 0
        self.in_flight = in_flight_first  # answer 409 this many times before executing

    def __call__(
        self, path: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Answer:
        key = headers["Idempotency-Key"]
        if key in self.stored:
            first_body, answer = self.stored[key]
            if first_body != body:
                return problem(422, "key-reused")
            return Answer(
                answer.status, {**answer.headers, "idempotent-replayed": "true"}, answer.body
            )
        if self.in_flight:
            self.in_flight -= 1
            return problem(409, "request-in-flight", **{"retry-after": "1"})
        self.executions += 1
        answer = ok({"charge": self.executions})
        self.stored[key] = (body, answer)
        return answer


ROUTE = Route("POST", "/payments", body=lambda: {"amount": 100})
POLICY = RetryPolicy(timeout=1.0, max_attempts=5, max_seconds=10.0)


def flow(
    respond: Callable[..., Answer], route: Route = ROUTE, **kw: Any
) -> tuple[Flow, FakeTransport]:
    transport = FakeTransport(respond)
    options: dict[str, Any] = {"policy": POLICY, "mix": Mix(), "rules": AnswerRules()}
    options.update(kw)
    return Flow(route, transport, rng=random.Random(3), **options), transport


def test_a_409_is_retried_with_the_same_key_and_body_after_retry_after() -> None:
    model = IdempotentModel(in_flight_first=2)
    f, transport = flow(model)
    op = f.run(Plan())
    assert op.result == "acknowledged" and not op.violations
    assert model.executions == 1
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in transport.sent}
    bodies = {body for _, body, _, _ in transport.sent}
    assert len(transport.sent) == 3 and len(keys) == 1 and len(bodies) == 1
    assert all(s >= 1.0 for s in transport.sleeps)  # Retry-After: 1 is a floor
    # 409s that will be retried are the protocol working, not failures.
    assert [r.failure for r in transport.reported] == [None, None, None]
    assert [r.name for r in transport.reported] == [
        "POST /payments",
        "POST /payments [retry]",
        "POST /payments [retry]",
    ]


def test_an_http_date_retry_after_is_honoured() -> None:
    when = email.utils.formatdate(usegmt=True)  # now: "retry at once" (minimum jitter only)
    later = email.utils.formatdate(__import__("time").time() + 4, usegmt=True)
    f, transport = flow(
        scripted(
            problem(503, "store-unavailable", **{"retry-after": later}),
            problem(503, "store-unavailable", **{"retry-after": when}),
            ok({"charge": 1}),
        )
    )
    op = f.run(Plan())
    assert op.result == "acknowledged"
    assert 3.0 <= transport.sleeps[0] <= 4.5
    assert transport.sleeps[1] <= 0.1


def test_retries_stop_at_the_attempt_bound_and_the_last_one_is_a_failure() -> None:
    f, transport = flow(scripted(problem(503, "store-unavailable", **{"retry-after": "1"})))
    op = f.run(Plan())
    assert op.result == "gave up" and not op.violations
    assert len(transport.sent) == POLICY.max_attempts
    failures = [r.failure for r in transport.reported]
    assert failures[:-1] == [None] * (POLICY.max_attempts - 1)
    assert failures[-1] == "gave up after 5 attempts (503)"


def test_no_wait_runs_past_the_time_budget() -> None:
    f, transport = flow(scripted(problem(429, "slow-down", **{"retry-after": "4"})))
    op = f.run(Plan())
    assert op.result == "gave up"
    assert transport.clock <= POLICY.max_seconds
    assert len(transport.sent) == 3  # 0 s, ~4 s, ~8 s; the next would start past 10 s


def test_timeouts_are_failed_requests_and_are_retried() -> None:
    f, transport = flow(scripted(Answer(0, {}, error="timeout"), ok({"charge": 1})))
    op = f.run(Plan())
    assert op.result == "acknowledged"
    assert [r.failure for r in transport.reported] == ["timeout", None]
    assert op.outcomes["timeout"] == 1


def test_an_abandoned_attempt_is_counted_as_such_and_never_reported() -> None:
    model = IdempotentModel()

    def respond(path: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
        if headers.get("x-slow"):
            model(path, body, headers, timeout)  # the server works on, the client gives up
            return Answer(0, {}, error="timeout")
        return model(path, body, headers, timeout)

    route = Route(
        "POST", "/payments", body=lambda: {"a": 1}, slow_headers={"x-slow": "1"}, abandon_after=0.3
    )
    f, transport = flow(respond, route)
    op = f.run(Plan(abandon=True))
    assert op.outcomes["abandoned"] == 1 and op.outcomes["replayed"] == 1
    assert op.result == "acknowledged" and not op.violations
    assert transport.sent[0][3] == 0.3 and transport.sent[1][3] == POLICY.timeout
    assert "x-slow" not in transport.sent[1][2]
    assert [(r.name, r.failure) for r in transport.reported] == [("POST /payments [retry]", None)]


def test_all_stories_against_a_correct_service_pass() -> None:
    model = IdempotentModel()
    f, transport = flow(model)
    op = f.run(Plan(duplicates=True, late_retry=True, reuse=True))
    assert not op.violations, op.violations
    assert model.executions == 1
    assert op.outcomes["executed"] == 1 and op.outcomes["replayed"] == 3  # 2 duplicates + late
    assert op.outcomes["422"] == 1 and op.compared == 3
    assert all(r.failure is None for r in transport.reported)
    assert {r.name for r in transport.reported} == {
        "POST /payments [duplicate]",
        "POST /payments [late retry]",
        "POST /payments [reused key]",
    }


class ForgetfulModel:
    """No idempotency at all: every request executes."""

    def __init__(self) -> None:
        self.executions = 0

    def __call__(self, *_: Any) -> Answer:
        self.executions += 1
        return ok({"charge": self.executions, "amount": 100})


def test_a_service_without_idempotency_is_caught_from_the_client_side() -> None:
    f, _ = flow(ForgetfulModel())
    op = f.run(Plan(duplicates=True, late_retry=True, reuse=True))
    kinds = {kind for kind, _ in op.violations}
    assert kinds == {"executed-twice", "answers-differ", "reused-key-accepted"}
    messages = "\n".join(m for _, m in op.violations)
    assert "body fields charge" in messages and "amount" not in messages
    assert f.key not in messages


def test_fields_that_legitimately_differ_can_be_ignored() -> None:
    n = iter(range(100))

    def stamped(*_: Any) -> Answer:
        return ok({"charge": 1, "meta": {"served_at": next(n)}}, replayed=True)

    rules = AnswerRules(ignore_fields=("meta.served_at",))
    op = flow(stamped, rules=rules)[0].run(Plan(late_retry=True))
    assert not op.violations and op.compared == 1
    op = flow(stamped)[0].run(Plan(late_retry=True))
    assert [k for k, _ in op.violations] == ["answers-differ"]
    assert "meta.served_at" in op.violations[0][1]


def test_replays_can_be_compared_on_listed_headers_too() -> None:
    answers = iter(
        [
            Answer(201, {**JSON, "location": "/p/1"}, b"{}"),
            Answer(201, {**REPLAY, "location": "/p/2"}, b"{}"),
        ]
    )
    op = flow(lambda *_: next(answers), rules=AnswerRules(compare_headers=("Location",)))[0].run(
        Plan(late_retry=True)
    )
    assert [k for k, _ in op.violations] == ["answers-differ"]
    assert "header location" in op.violations[0][1]


def test_a_middleware_500_is_a_violation_but_a_replayed_handler_500_is_an_answer() -> None:
    f, transport = flow(scripted(problem(500, "stored-response-unreadable")))
    op = f.run(Plan())
    assert [k for k, _ in op.violations] == ["middleware-5xx"]
    assert op.result == "refused" and transport.reported[0].failure == "HTTP 500"
    handler = Answer(500, JSON, b'{"error": "card declined upstream"}')
    replay = Answer(500, REPLAY, handler.body)
    op = flow(scripted(handler, replay))[0].run(Plan(late_retry=True))
    assert not op.violations
    op = flow(scripted(handler), rules=AnswerRules(fail_on_5xx=True))[0].run(Plan())
    assert [k for k, _ in op.violations] == ["5xx"]


def test_a_503_that_asks_for_a_retry_is_no_violation() -> None:
    unavailable = problem(503, "store-unavailable", **{"retry-after": "1"})
    op = flow(scripted(unavailable, ok({})))[0].run(Plan())
    assert not op.violations and op.outcomes["503"] == 1


def test_a_422_for_the_same_body_means_an_unstable_fingerprint() -> None:
    op = flow(scripted(problem(422, "key-reused")))[0].run(Plan())
    assert [k for k, _ in op.violations] == ["unexpected-422"]
    # A handler's own 422 (a validation error) is an answer, not a refusal of the key.
    op = flow(scripted(Answer(422, JSON, b'{"detail": "bad"}')))[0].run(Plan())
    assert not op.violations and op.result == "refused"


def test_a_reused_key_that_is_not_refused_with_422_is_a_violation() -> None:
    def answers(status: int) -> Callable[..., Answer]:
        def respond(path: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
            return (
                ok({"charge": 1})
                if b"idem_reuse_probe" not in body
                else Answer(status, JSON, b"{}")
            )

        return respond

    op = flow(answers(400))[0].run(Plan(reuse=True))
    assert [k for k, _ in op.violations] == ["reused-key-not-422"]
    op = flow(answers(200))[0].run(Plan(reuse=True))
    assert [k for k, _ in op.violations] == ["reused-key-accepted"]


def test_without_a_replay_header_executed_twice_is_not_claimed() -> None:
    same = ok({"charge": 1})
    op = flow(scripted(same), rules=AnswerRules(replay_header=None))[0].run(Plan(late_retry=True))
    assert not op.violations
    op = flow(scripted(same))[0].run(Plan(late_retry=True))
    assert [k for k, _ in op.violations] == ["executed-twice"]


def test_probes_run_only_after_an_acknowledged_answer() -> None:
    f, transport = flow(scripted(Answer(400, JSON, b"{}")))
    op = f.run(Plan(late_retry=True, reuse=True))
    assert op.result == "refused" and len(transport.sent) == 1


def test_every_operation_gets_its_own_key() -> None:
    model = IdempotentModel()
    transport = FakeTransport(model)
    rng = random.Random(5)
    for _ in range(20):
        Flow(ROUTE, transport, policy=POLICY, mix=Mix(), rules=AnswerRules(), rng=rng).run(Plan())
    assert len({headers["Idempotency-Key"] for _, _, headers, _ in transport.sent}) == 20
    assert model.executions == 20


# -- tallies, verification and checks ---------------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["POST /a", "POST /b"]),
        st.sampled_from(["correct", "forgetful", "refused"]),
        st.booleans(),
    ),
    max_size=25,
)


def _operation(route: str, kind: str, late: bool) -> Operation:
    respond: Callable[..., Answer] = {
        "correct": IdempotentModel(),
        "forgetful": ForgetfulModel(),
        "refused": scripted(Answer(400, JSON, b"{}")),
    }[kind]
    return flow(respond, Route("POST", route.split()[1], body=lambda: {"x": 1}))[0].run(
        Plan(late_retry=late)
    )


@settings(max_examples=50, deadline=None)
@given(OPS, st.integers(min_value=1, max_value=4))
def test_worker_tallies_merged_on_the_master_equal_one_tally(
    specs: list[tuple[str, str, bool]], workers: int
) -> None:
    ops = [_operation(*spec) for spec in specs]
    single = Tally(keep_acks=True)
    shards = [Tally(keep_acks=True) for _ in range(workers)]
    for i, op in enumerate(ops):
        single.record(op)
        shards[i % workers].record(op)
        shards[i % workers].request(10.0 + i, failed=i % 3 == 0, at=1000.0 + i % 5)
        single.request(10.0 + i, failed=i % 3 == 0, at=1000.0 + i % 5)
    master = Tally(keep_acks=True)
    for shard in shards:
        half = shard.drain()  # a worker's periodic report
        master.merge_wire(json.loads(json.dumps(half)))  # what travels must be plain data
        assert shard.operations == 0
    assert master.table() == single.table()
    merged, alone = master.verify(), single.verify()
    assert (merged.counts, merged.checks) == (alone.counts, alone.checks)
    every = {message for op in ops for _, message in op.violations}
    every |= {message for examples in alone.violations.values() for message in examples}
    assert all(set(examples) <= every for examples in merged.violations.values())
    assert sorted(map(repr, master.acks)) == sorted(map(repr, single.acks))
    assert master.latency == single.latency
    assert master.per_second == single.per_second


def test_nothing_acknowledged_fails_the_run() -> None:
    tally = Tally()
    tally.record(_operation("POST /a", "refused", False))
    result = tally.verify()
    assert not result.ok and result.counts["nothing-acknowledged"] == 1
    assert "1 refused" in result.checks["operations"]


def test_violations_keep_every_count_but_few_examples() -> None:
    result = Verification()
    for i in range(25):
        result.fail("answers-differ", f"example {i}")
    merged = Verification.from_dict(result.to_dict())
    merged.merge(result)
    assert merged.counts["answers-differ"] == 50
    assert len(merged.violations["answers-differ"]) == 10
    assert "  VIOLATION answers-differ: 50" in merged.lines()


def test_a_server_check_that_raises_is_a_violation() -> None:
    def broken(context: CheckContext, result: Verification) -> None:
        raise ConnectionError("service gone")

    def counts(context: CheckContext, result: Verification) -> None:
        result.checks["ledger"] = f"{len(context.acks)} acks"
        context.info["events"] = {"executed": 1}

    result = Verification()
    context = CheckContext("http://127.0.0.1:1", [])
    run_checks([counts, broken], context, result)
    assert result.checks["ledger"] == "0 acks" and context.info["events"] == {"executed": 1}
    assert result.counts["server-check-error"] == 1
    assert "broken: ConnectionError: service gone" in result.violations["server-check-error"][0]


def test_latency_is_bucketed_like_locust() -> None:
    assert [bucket_ms(v) for v in (0.4, 99.4, 123.0, 1234.0, 12345.0)] == [0, 99, 120, 1200, 12000]


def test_report_renders_verdict_outcomes_latency_and_plot(tmp_path: Path) -> None:
    tally = Tally()
    tally.record(_operation("POST /a", "forgetful", True))
    tally.record(_operation("POST /a", "correct", True))
    for i in range(50):
        tally.request(5.0 + i, failed=False, at=2000.0 + i // 10)
    summary = {
        "host": "http://svc",
        "command": "locust -f x.py",
        "verification": tally.verify().to_dict(),
        "routes": tally.table(),
        "requests": [
            {
                "type": "POST",
                "name": "POST /a",
                "requests": 5,
                "failures": 0,
                "p50": 5,
                "p95": 9,
                "p99": 9,
                "max": 9,
            }
        ],
        "failures": [{"method": "POST", "name": "POST /a", "error": "timeout", "n": 2}],
        "latency": tally.to_wire() | {"per_second": tally.to_wire()["per_second"]},
        "timeline": [(2002.5, "kill -9 redis-server")],
        "info": {"middleware events": {"executed": 3}},
    }
    path = write_report(summary, tmp_path / "r" / "report.md")
    text = path.read_text()
    assert "## Verification: FAIL" in text and "**VIOLATION executed-twice: 1**" in text
    assert "| POST /a | 2 | 2 |" in text
    assert "- POST /a: timeout: 2" in text and "2.5 s: kill -9 redis-server" in text
    assert "  - executed: 3" in text
    svg = path.with_suffix(".svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 3 and "stroke-dasharray" in svg


def test_the_kit_imports_without_locust_or_gevent() -> None:
    code = (
        "import sys, integrations.locust as kit, integrations.locust.report, "
        "integrations.locust.tally, integrations.locust.flow;"
        "assert 'locust' not in sys.modules and 'gevent' not in sys.modules, 'patched';"
        "assert kit.__all__ == sorted(kit.__all__);"
        "assert set(kit.__all__) >= {'IdempotentUser', 'Route', 'Mix', 'RetryPolicy'};"
        "assert all(getattr(kit, name) is not None for name in kit.__all__);"
        "assert 'locust' in sys.modules  # IdempotentUser, and only it, brought Locust in"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
