"""Prometheus metrics from idemkit's events: ``observer=PrometheusObserver()``.

One observer for every primitive (pass the same instance to the middleware, the decorator,
locks, CRDT stores and the patterns). Metrics, with the default ``namespace="idemkit"``:

========================================  =====================  ===========================
metric                                    labels                 from
========================================  =====================  ===========================
``idemkit_requests_total``                route, outcome         ``idempotency.request``
``idemkit_calls_total``                   namespace, outcome     ``idempotency.call``
``idemkit_late_completions_total``        outcome                ``idempotency.completion``
``idemkit_store_seconds`` (histogram)     op, outcome            ``idempotency.store``
``idemkit_lock_wait_seconds`` (hist.)     kind, outcome          ``lock.acquire``
``idemkit_lock_hold_seconds`` (hist.)     kind, outcome          ``lock.hold``
``idemkit_lock_lost_total``               kind                   ``lock.lost``
``idemkit_crdt_merges_total``             type, outcome          ``crdt.merge``
``idemkit_crdt_sync_rounds_total``        src, dst, outcome      ``crdt.sync``
``idemkit_crdt_sync_seconds`` (hist.)     src, dst, outcome      ``crdt.sync``
``idemkit_circuit_state``                 breaker, state         ``circuit.state`` (1: current)
``idemkit_events_total``                  event, outcome         every other event
========================================  =====================  ===========================

``route`` is the route template (``/orders/{id}``), empty for requests answered before
routing (replays and problems of a middleware in front of the router). CRDT metrics are
labelled by the CRDT type and the regions of a sync pair, never by object name. Creating a second
observer on the same registry and namespace reuses the first one's collectors instead of
raising ``DuplicatedTimeseries``.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from integrations._extras import missing_extra

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as exc:
    raise missing_extra(__name__, "prometheus", exc) from exc

from idemkit.observe import Event

__all__ = ["LOCK_BUCKETS", "STORE_BUCKETS", "PrometheusObserver"]

# Redis round trips are sub-millisecond on a LAN; a stalled store hits store_timeout (1 s).
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LOCK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Metrics:
    """The collectors of one (registry, namespace)."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        def histogram(name: str, doc: str, labels: list[str], buckets: Any) -> Histogram:
            return Histogram(
                name, doc, labels, namespace=namespace, registry=registry, buckets=buckets
            )

        self.requests = counter(
            "requests", "Keyed HTTP requests by route template and outcome", ["route", "outcome"]
        )
        self.calls = counter(
            "calls", "Idempotent function calls by namespace and outcome", ["namespace", "outcome"]
        )
        self.late = counter(
            "late_completions", "Completions stored by a background retry", ["outcome"]
        )
        self.store = histogram(
            "store_seconds", "Idempotency store operations", ["op", "outcome"], STORE_BUCKETS
        )
        self.lock_wait = histogram(
            "lock_wait_seconds", "Time to acquire a lock", ["kind", "outcome"], LOCK_BUCKETS
        )
        self.lock_hold = histogram(
            "lock_hold_seconds", "Time a lock was held", ["kind", "outcome"], LOCK_BUCKETS
        )
        self.lock_lost = counter("lock_lost", "Locks found lost while held", ["kind"])
        self.crdt_merges = counter("crdt_merges", "CRDT merges", ["type", "outcome"])
        pair = ["src", "dst", "outcome"]
        self.crdt_syncs = counter("crdt_sync_rounds", "CRDT region sync rounds", pair)
        self.crdt_sync_seconds = histogram(
            "crdt_sync_seconds", "CRDT region sync rounds", pair, LOCK_BUCKETS
        )
        self.circuit = Gauge(
            "circuit_state",
            "Circuit breaker state (1 for the current one)",
            ["breaker", "state"],
            namespace=namespace,
            registry=registry,
        )
        self.events = counter("events", "Other idemkit events", ["event", "outcome"])


_lock = threading.Lock()
_shared: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, _Metrics]] = (
    weakref.WeakKeyDictionary()
)


def _metrics(registry: CollectorRegistry, namespace: str) -> _Metrics:
    with _lock:
        per_namespace = _shared.setdefault(registry, {})
        metrics = per_namespace.get(namespace)
        if metrics is None:
            metrics = per_namespace[namespace] = _Metrics(registry, namespace)
        return metrics


class PrometheusObserver:
    """An idemkit observer that updates Prometheus metrics; see the module docstring."""

    def __init__(
        self, *, registry: CollectorRegistry = REGISTRY, namespace: str = "idemkit"
    ) -> None:
        self.metrics = _metrics(registry, namespace)
        # Label children are looked up once: the hot path is a dict lookup and an update.
        self._children: dict[tuple[object, ...], Any] = {}
        m = self.metrics
        self._handlers: dict[str, Callable[[Event], None]] = {
            "idempotency.request": lambda e: self._child(
                m.requests, e.route or "", e.outcome
            ).inc(),
            "idempotency.call": lambda e: self._child(m.calls, e.route or "", e.outcome).inc(),
            "idempotency.completion": lambda e: self._child(m.late, e.outcome).inc(),
            "idempotency.store": lambda e: self._child(
                m.store, str(e.attrs.get("op", "")), e.outcome
            ).observe(e.duration),
            "lock.acquire": lambda e: self._child(m.lock_wait, _kind(e), e.outcome).observe(
                e.duration
            ),
            "lock.hold": lambda e: self._child(m.lock_hold, _kind(e), e.outcome).observe(
                e.duration
            ),
            "lock.lost": lambda e: self._child(m.lock_lost, _kind(e)).inc(),
            "crdt.merge": lambda e: self._child(
                m.crdt_merges, str(e.attrs.get("type", "")), e.outcome
            ).inc(),
            "crdt.sync": self._sync,
            "circuit.state": self._circuit,
        }

    def __call__(self, event: Event) -> None:
        handler = self._handlers.get(event.name)
        if handler is not None:
            handler(event)
        else:
            self._child(self.metrics.events, event.name, event.outcome).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _sync(self, event: Event) -> None:
        labels = (str(event.attrs.get("src", "")), str(event.attrs.get("dst", "")), event.outcome)
        self._child(self.metrics.crdt_syncs, *labels).inc()
        self._child(self.metrics.crdt_sync_seconds, *labels).observe(event.duration)

    def _circuit(self, event: Event) -> None:
        breaker = event.route or ""
        previous = event.attrs.get("previous")
        if isinstance(previous, str):
            self._child(self.metrics.circuit, breaker, previous).set(0)
        self._child(self.metrics.circuit, breaker, event.outcome).set(1)


def _kind(event: Event) -> str:
    return str(event.attrs.get("kind", "lock"))
