"""Counts of one run, per route: attempt outcomes, operation results, violations, latency.

A Locust worker keeps a :class:`Tally` and hands its increments to the master with every
stats report (:meth:`Tally.drain`); the master merges them (:meth:`Tally.merge_wire`), so the
web UI, the final verification and the report see the numbers of all workers. The wire form
holds only plain JSON types (Locust ships it with msgpack).

Latency is kept per wall-clock second as a histogram of real HTTP requests only (rounded
like Locust's own statistics), for the report's plot.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

from integrations.locust.answers import ABANDONED, OUTCOMES
from integrations.locust.operation import ACKNOWLEDGED, GAVE_UP, REFUSED, Ack, Operation
from integrations.locust.verdict import Verification

__all__ = ["MAX_ACKS", "Tally", "bucket_ms"]

MAX_ACKS = 1_000_000  # acknowledgements kept for server-side checks; beyond, only counted
RESULTS = (ACKNOWLEDGED, REFUSED, GAVE_UP)


def bucket_ms(ms: float) -> int:
    """Round a response time the way Locust does: exact below 100 ms, then 2 digits."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


class Tally:
    def __init__(self, *, keep_acks: bool = False) -> None:
        self.keep_acks = keep_acks
        self._reset()

    def _reset(self) -> None:
        self.outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.results: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.route_violations: Counter[str] = Counter()
        self.stories: Counter[str] = Counter()
        self.compared = 0
        self.probe_gave_up = 0
        self.verification = Verification()
        self.acks: list[Ack] = []
        self.acks_dropped = 0
        self.latency: Counter[int] = Counter()
        self.per_second: defaultdict[int, Counter[int]] = defaultdict(Counter)
        self.failures_per_second: Counter[int] = Counter()

    # -- recording ---------------------------------------------------------------------------

    def record(self, op: Operation) -> None:
        route = op.route
        self.outcomes[route].update(op.outcomes)
        self.results[route][op.result] += 1
        self.stories.update(op.stories)
        self.compared += op.compared
        self.probe_gave_up += op.probe_gave_up
        for kind, message in op.violations:
            self.verification.fail(kind, message)
            self.route_violations[route] += 1
        if self.keep_acks:
            ack = op.ack()
            if ack is not None:
                if len(self.acks) < MAX_ACKS:
                    self.acks.append(ack)
                else:
                    self.acks_dropped += 1

    def request(self, response_time_ms: float, failed: bool, at: float | None = None) -> None:
        second = int(time.time() if at is None else at)
        ms = bucket_ms(response_time_ms)
        self.latency[ms] += 1
        self.per_second[second][ms] += 1
        if failed:
            self.failures_per_second[second] += 1

    # -- wire ------------------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        return {
            "outcomes": {r: dict(c) for r, c in self.outcomes.items()},
            "results": {r: dict(c) for r, c in self.results.items()},
            "route_violations": dict(self.route_violations),
            "stories": dict(self.stories),
            "compared": self.compared,
            "probe_gave_up": self.probe_gave_up,
            "verification": self.verification.to_dict(),
            "acks": [a.to_wire() for a in self.acks],
            "acks_dropped": self.acks_dropped,
            "latency": _str_keys(self.latency),
            "per_second": {str(s): _str_keys(h) for s, h in self.per_second.items()},
            "failures_per_second": _str_keys(self.failures_per_second),
        }

    def drain(self) -> dict[str, Any]:
        """The increments since the last drain, and start counting from zero."""
        wire = self.to_wire()
        keep = self.keep_acks
        self._reset()
        self.keep_acks = keep
        return wire

    def merge_wire(self, doc: Mapping[str, Any]) -> None:
        for route, counts in doc.get("outcomes", {}).items():
            self.outcomes[route].update(_ints(counts))
        for route, counts in doc.get("results", {}).items():
            self.results[route].update(_ints(counts))
        self.route_violations.update(_ints(doc.get("route_violations", {})))
        self.stories.update(_ints(doc.get("stories", {})))
        self.compared += int(doc.get("compared", 0))
        self.probe_gave_up += int(doc.get("probe_gave_up", 0))
        self.verification.merge(doc.get("verification", {}))
        for row in doc.get("acks", []):
            if len(self.acks) < MAX_ACKS:
                self.acks.append(Ack.from_wire(row))
            else:
                self.acks_dropped += 1
        self.acks_dropped += int(doc.get("acks_dropped", 0))
        self.latency.update(_int_keys(doc.get("latency", {})))
        for second, hist in doc.get("per_second", {}).items():
            self.per_second[int(second)].update(_int_keys(hist))
        self.failures_per_second.update(_int_keys(doc.get("failures_per_second", {})))

    # -- reading ---------------------------------------------------------------------------

    @property
    def operations(self) -> int:
        return sum(sum(c.values()) for c in self.results.values())

    @property
    def acknowledged(self) -> int:
        return sum(c[ACKNOWLEDGED] for c in self.results.values())

    def table(self) -> list[dict[str, Any]]:
        """One row per route: operations, results, outcome counts, violations."""
        rows = []
        for route in sorted(self.results.keys() | self.outcomes.keys()):
            results, outcomes = self.results[route], self.outcomes[route]
            row: dict[str, Any] = {"route": route, "operations": sum(results.values())}
            row.update({r: results[r] for r in RESULTS})
            row.update({o: outcomes[o] for o in OUTCOMES})
            row["violations"] = self.route_violations[route]
            rows.append(row)
        return rows

    def verify(self) -> Verification:
        """The client-side verification of everything recorded so far."""
        result = Verification()
        result.merge(self.verification)
        ops, acked = self.operations, self.acknowledged
        gave_up = sum(c[GAVE_UP] for c in self.results.values())
        refused = sum(c[REFUSED] for c in self.results.values())
        result.checks["operations"] = (
            f"{ops} on {len(self.results)} route(s): {acked} acknowledged, {refused} refused, "
            f"{gave_up} gave up"
        )
        result.checks["answers per key"] = (
            f"{self.compared} later answers compared with the first one for their key"
        )
        abandoned = sum(c[ABANDONED] for c in self.outcomes.values())
        result.checks["stories"] = (
            f"{self.stories['duplicates']} concurrent-duplicate groups, {abandoned} attempts "
            f"abandoned on purpose, {self.stories['late retry']} late retries, "
            f"{self.stories['reuse']} reused keys"
        )
        if acked == 0:
            result.fail(
                "nothing-acknowledged",
                f"no operation got a 2xx answer ({ops} tried): check --host, the routes and "
                "the body factories; there is nothing to verify",
            )
        return result


def _str_keys(counter: Mapping[int, int]) -> dict[str, int]:
    return {str(k): v for k, v in counter.items()}


def _int_keys(raw: Mapping[Any, Any]) -> dict[int, int]:
    return {int(k): int(v) for k, v in raw.items()}


def _ints(raw: Mapping[str, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in raw.items()}
