"""The retry loop and the stories of one operation, independent of how requests are sent.

:class:`Flow` runs one operation the way a careful client does: a fresh key, the same body
on every attempt, retries after timeouts, dropped connections and the statuses of the
:class:`RetryPolicy`, waits that honour ``Retry-After``. Then, as drawn from the
:class:`Mix`, the stories around it: concurrent duplicates, an abandoned first attempt, a
late retry, a reused key. Every answer goes through :class:`Operation`'s checks.

Sending, sleeping, running things concurrently and reporting to the load tool go through a
:class:`Transport`; the Locust user is one, the unit tests use a fake one with a fake clock.

What is reported as a request (with its real response time) and what is not:

* an attempt that got an answer is a request: a success when it is 2xx, a replay, the
  expected 422 of a reused key, or a "try again" that will be retried; a failure otherwise,
  including the last "try again" before giving up;
* a timeout or a dropped connection is a failed request (the service did not answer);
* a deliberately abandoned attempt is not a request at all: it is counted as ``abandoned``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from integrations.locust.answers import ABANDONED, REPLAYED, TIMEOUT, Answer, AnswerRules
from integrations.locust.operation import Operation
from integrations.locust.retry import RetryPolicy, parse_retry_after
from integrations.locust.route import Mix, Plan, Prepared, Route

__all__ = ["Flow", "Sent", "Transport"]


@dataclass(frozen=True, slots=True)
class Sent:
    """One attempt as the transport saw it."""

    answer: Answer
    elapsed: float  # seconds from send to the end of the body (or to the error)
    started: float  # epoch seconds
    response: Any = None  # the transport's own response object, passed on to the load tool


class Transport(Protocol):
    def send(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Sent: ...

    def report(self, method: str, name: str, sent: Sent, failure: str | None) -> None: ...

    def sleep(self, seconds: float) -> None: ...

    def together(self, jobs: Sequence[Callable[[], None]], timeout: float) -> None:
        """Run ``jobs`` concurrently; return when all finished or ``timeout`` passed (the
        stragglers are stopped)."""
        ...

    def now(self) -> float:
        """Monotonic seconds."""
        ...


@dataclass(frozen=True, slots=True)
class _Leg:
    """One retry loop: which request, under which names, checked how."""

    story: str  # for messages: "first attempt", "duplicate", "late retry", "reused key"
    first_name: str  # Locust name of the loop's first attempt
    retry_name: str  # Locust name of its retries
    request: Prepared
    abandon_first: bool = False
    reuse: bool = False


class Flow:
    def __init__(
        self,
        route: Route,
        transport: Transport,
        *,
        policy: RetryPolicy,
        mix: Mix,
        rules: AnswerRules,
        rng: random.Random,
        key_header: str = "Idempotency-Key",
    ) -> None:
        self.route = route
        self.transport = transport
        self.policy = policy
        self.mix = route.mix or mix
        self.rules = route.rules or rules
        self.rng = rng
        self.key_header = key_header
        self.key = str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def run(self, plan: Plan | None = None, request: Prepared | None = None) -> Operation:
        plan = self.mix.draw(self.rng) if plan is None else plan
        request = self.route.prepare() if request is None else request
        op = Operation(self.route.label, self.rules, request)
        label = self.route.label
        if plan.duplicates:
            op.stories.add("duplicates")
            leg = _Leg("duplicate", f"{label} [duplicate]", f"{label} [retry]", request)

            def duplicate() -> None:
                self._loop(op, leg)

            jobs = [duplicate] * self.mix.duplicate_count
            budget = self.policy.max_seconds + self.policy.timeout + 1.0
            self.transport.together(jobs, budget)
        else:
            if plan.abandon:
                op.stories.add("abandon")
            leg = _Leg(
                "first attempt",
                # Made slow on purpose, when the service supports it: its own statistics row.
                f"{label} [slow]" if plan.abandon and self.route.slow_headers else label,
                f"{label} [retry]",
                request,
                abandon_first=plan.abandon,
            )
            op.final = self._loop(op, leg)
        if op.acknowledged is None:
            return op
        if plan.late_retry:
            op.stories.add("late retry")
            self.transport.sleep(self.rng.uniform(0, self.mix.late_delay))
            name = f"{label} [late retry]"
            self._loop(op, _Leg("late retry", name, name, request))
        if plan.reuse:
            op.stories.add("reuse")
            name = f"{label} [reused key]"
            other = self.route.reused(request, self.rng)
            self._loop(op, _Leg("reused key", name, name, other, reuse=True))
        return op

    def _loop(self, op: Operation, leg: _Leg) -> Answer:
        policy, transport = self.policy, self.transport
        deadline = transport.now() + policy.max_seconds
        answer = Answer(0, {}, error=TIMEOUT)
        for attempt in range(policy.max_attempts):
            abandon = leg.abandon_first and attempt == 0
            sent = transport.send(
                self.route.method,
                leg.request.path,
                leg.request.body,
                self._headers(abandon),
                self.route.abandon_after if abandon else policy.timeout,
            )
            answer = sent.answer
            if abandon and answer.status == 0 and answer.error == TIMEOUT:
                answer = replace(answer, error=ABANDONED)
            retry = answer.status == 0 or answer.status in policy.statuses
            delay = 0.0
            last = attempt + 1 >= policy.max_attempts
            if retry and not last:
                wait = parse_retry_after(answer.headers.get("retry-after"))
                delay = policy.delay(attempt, wait, self.rng)
                last = transport.now() + delay >= deadline
            if leg.reuse:
                outcome = op.observe_reuse(answer, final=not retry)
            else:
                story = leg.story if attempt == 0 else f"{leg.story}, retry {attempt}"
                outcome = op.observe(answer, story)
            if answer.error != ABANDONED:
                name = leg.first_name if attempt == 0 else leg.retry_name
                failure = self._failure(answer, outcome, leg, retry, last, attempt)
                transport.report(self.route.method, name, sent, failure)
            if not retry:
                return answer
            if last:
                if leg.story in ("first attempt", "duplicate"):
                    op.gave_up = True
                else:
                    op.probe_gave_up += 1
                return answer
            transport.sleep(delay)
        return answer

    def _headers(self, slow: bool) -> dict[str, str]:
        headers = {self.key_header: self.key}
        if self.route.body is not None:
            headers["Content-Type"] = self.route.content_type
        headers.update(self.route.headers)
        if slow:
            headers.update(self.route.slow_headers)
        return headers

    def _failure(
        self, answer: Answer, outcome: str, leg: _Leg, retry: bool, last: bool, attempt: int
    ) -> str | None:
        if answer.status == 0:
            return answer.error or "no answer"
        if retry:
            return f"gave up after {attempt + 1} attempts ({answer.status})" if last else None
        if answer.ok or (answer.status == 422 and leg.reuse and outcome != REPLAYED):
            return None
        return f"HTTP {answer.status}"
