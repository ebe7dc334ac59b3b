"""Prometheus metrics for the middleware: ``observer=PrometheusObserver()``."""

from __future__ import annotations

from integrations._extras import missing_extra

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter
except ImportError as exc:
    raise missing_extra(__name__, "prometheus", exc) from exc

from idemkit.observe import Event

__all__ = ["PrometheusObserver"]


class PrometheusObserver:
    """Counts middleware outcomes in ``<namespace>_requests_total{outcome=...}``."""

    def __init__(
        self, *, registry: CollectorRegistry = REGISTRY, namespace: str = "idemkit"
    ) -> None:
        self.counter = Counter(
            "requests",
            "Requests seen by the idempotency middleware, by outcome",
            ["outcome"],
            namespace=namespace,
            registry=registry,
        )
        # Pre-create the children: the hot path then costs one dict lookup and an increment.
        self._children = {
            outcome: self.counter.labels(outcome)
            for outcome in (
                "executed",
                "replayed",
                "conflict",
                "mismatch",
                "released",
                "fenced",
                "unavailable",
                "bypassed",
                "rejected",
            )
        }

    def __call__(self, event: Event) -> None:
        outcome = event.outcome
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = self.counter.labels(outcome)
        child.inc()
