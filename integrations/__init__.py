"""Adapters for clients and metrics. Import the submodule you need; each needs its extra
(importing one without it raises an ImportError that names the ``pip install`` to run):

* ``integrations.httpx_client``: ``IdempotentTransport``, ``SyncIdempotentTransport``
  (extra ``httpx``)
* ``integrations.requests_client``: ``IdempotentAdapter``, ``idempotent_session``
  (extra ``requests``)
* ``integrations.circuit_breaker``: ``CircuitBreaker`` for either client (no extra)
* ``integrations.retry``: ``RetryPolicy``, what the clients retry and why (no extra)
* ``integrations.prometheus``: ``PrometheusObserver`` (extra ``prometheus``)
"""

from __future__ import annotations

__all__: list[str] = []
