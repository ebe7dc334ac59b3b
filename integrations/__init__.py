"""Adapters for frameworks, clients and observability tools. Import the submodule you need;
each needs its extra (importing one without it raises an ImportError that names the
``pip install`` to run):

* ``integrations.httpx_client``: ``IdempotentTransport``, ``SyncIdempotentTransport``
  (extra ``httpx``)
* ``integrations.requests_client``: ``IdempotentAdapter``, ``idempotent_session``
  (extra ``requests``)
* ``integrations.circuit_breaker``: ``CircuitBreaker`` for either client (no extra)
* ``integrations.retry``: ``RetryPolicy``, what the clients retry and why (no extra)
* ``integrations.prometheus``: ``PrometheusObserver`` (extra ``prometheus``)
* ``integrations.otel``: ``OpenTelemetryObserver`` (extra ``otel``)
* ``integrations.logging``: ``LoggingObserver``, ``JsonFormatter`` (no extra)
* ``integrations.fastapi``: ``Idempotency``, ``document_idempotency`` (extra ``fastapi``)
* ``integrations.django``: ``IdempotencyMiddleware`` for ``MIDDLEWARE`` (extra ``django``)
* ``integrations.litestar``: ``IdempotencyPlugin`` (extra ``litestar``)
"""

from __future__ import annotations

__all__: list[str] = []
