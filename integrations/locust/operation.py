"""One logical operation: one key, one request, every answer it got, checked as they come.

The checks need nothing from the server:

* every successful or replayed answer for the key is identical to the first one
  (``answers-differ``);
* a service that marks replays never executes the key twice (``executed-twice``);
* the same key with a different body gets 422 (``reused-key-accepted`` when it was executed
  or replayed instead, ``reused-key-not-422`` for any other final answer);
* the same key with the same body never gets 422 (``unexpected-422``);
* the middleware never answers 5xx on its own behalf, except the 503 that asks for a retry
  (``middleware-5xx``; ``5xx`` too with ``AnswerRules(fail_on_5xx=True)``).

Messages name the route and what differs, never the key or a body.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from integrations.locust.answers import EXECUTED, REPLAYED, Answer, AnswerRules, Shape
from integrations.locust.route import Prepared

__all__ = ["ACKNOWLEDGED", "GAVE_UP", "REFUSED", "Ack", "Operation"]

ACKNOWLEDGED = "acknowledged"  # a 2xx answer reached the client
REFUSED = "refused"  # a final answer that is not 2xx
GAVE_UP = "gave up"  # attempts or time ran out on answers that asked for a retry


@dataclass(frozen=True, slots=True)
class Ack:
    """What a client was told for one operation: input for server-side check hooks."""

    route: str
    path: str
    status: int
    request: Any  # the JSON body sent (None for a raw body)
    response: Any  # the JSON answer (None when not JSON)

    def to_wire(self) -> list[Any]:
        return [self.route, self.path, self.status, self.request, self.response]

    @classmethod
    def from_wire(cls, row: list[Any]) -> Ack:
        return cls(str(row[0]), str(row[1]), int(row[2]), row[3], row[4])


@dataclass
class Operation:
    route: str
    rules: AnswerRules
    request: Prepared
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[tuple[str, str]] = field(default_factory=list)
    stories: set[str] = field(default_factory=set)
    compared: int = 0  # answers checked against the first one
    executed: int = 0  # 2xx answers not marked as replays
    first: Shape | None = None
    acknowledged: Answer | None = None
    final: Answer | None = None  # the main request's last answer
    gave_up: bool = False
    probe_gave_up: int = 0

    def fail(self, kind: str, message: str) -> None:
        self.violations.append((kind, f"{self.route}: {message}"))

    def observe(self, answer: Answer, story: str) -> str:
        """Check one answer to the operation's own request; returns its outcome column."""
        outcome = self.rules.outcome(answer)
        self.outcomes[outcome] += 1
        if answer.status == 0:
            return outcome
        self._check_5xx(answer, story)
        if answer.status == 422 and outcome != REPLAYED and self._key_refusal(answer):
            self.fail(
                "unexpected-422",
                f"{story}: the same key with the same body got 422; the service's request "
                "fingerprint is not stable (does it cover per-attempt headers?)",
            )
        if answer.ok or outcome == REPLAYED:
            self._compare(answer, story)
        if outcome == EXECUTED and self.rules.replay_header is not None:
            self.executed += 1
            if self.executed == 2:
                self.fail(
                    "executed-twice",
                    f"{story}: a second answer without {self.rules.replay_header}: true; the "
                    "key was executed twice (or the service marks replays with another header:"
                    " set AnswerRules(replay_header=...))",
                )
        if answer.ok and self.acknowledged is None:
            self.acknowledged = answer
        return outcome

    def observe_reuse(self, answer: Answer, final: bool) -> str:
        """Check an answer to the same key with a different body (expects 422)."""
        outcome = self.rules.outcome(answer)
        self.outcomes[outcome] += 1
        if answer.status == 0:
            return outcome
        self._check_5xx(answer, "reused key")
        if answer.status == 422 and outcome != REPLAYED:
            return outcome
        if answer.ok or outcome == REPLAYED:
            how = "replayed" if outcome == REPLAYED else "executed"
            self.fail(
                "reused-key-accepted",
                f"the same key with a different body was {how} ({answer.status}) instead of "
                "refused with 422",
            )
        elif final:
            self.fail(
                "reused-key-not-422",
                f"the same key with a different body got {answer.status}, not 422",
            )
        return outcome

    def _key_refusal(self, answer: Answer) -> bool:
        # A handler's own 422 (a validation error, stored and replayed) is an answer, not a
        # refusal of the key; the middleware's carries its problem type.
        return self.rules.problem_prefix is None or self.rules.problem_type(answer) is not None

    def _check_5xx(self, answer: Answer, story: str) -> None:
        if answer.status < 500 or answer.status == 503:
            return
        problem = self.rules.problem_type(answer)
        if problem is not None:
            message = f"{story}: the middleware answered {answer.status} {problem}"
            self.fail("middleware-5xx", message)
        elif self.rules.fail_on_5xx:
            self.fail("5xx", f"{story}: the service answered {answer.status}")

    def _compare(self, answer: Answer, story: str) -> None:
        shape = self.rules.shape(answer)
        if self.first is None:
            self.first = shape
            return
        self.compared += 1
        diff = self.first.differences(shape)
        if diff:
            self.fail("answers-differ", f"{story}: answer differs from the first one ({diff})")

    @property
    def result(self) -> str:
        if self.acknowledged is not None:
            return ACKNOWLEDGED
        return GAVE_UP if self.gave_up else REFUSED

    def ack(self) -> Ack | None:
        if self.acknowledged is None:
            return None
        return Ack(
            self.route,
            self.request.path,
            self.acknowledged.status,
            self.request.document,
            self.acknowledged.json(),
        )
