"""Adapters for clients and metrics. Import the submodule you need; each needs its extra:

* ``integrations.httpx_client``: ``IdempotentTransport`` (extra ``httpx``)
* ``integrations.prometheus``: ``PrometheusObserver`` (extra ``prometheus``)
"""

from __future__ import annotations

__all__: list[str] = []
