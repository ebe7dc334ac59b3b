"""``IdempotencyMiddleware``: a pure ASGI middleware for the ``Idempotency-Key`` header.

Semantics follow the IETF httpapi draft "The Idempotency-Key HTTP Header Field" and Stripe's
public behaviour; README.md lists every option and the failure behaviour. A first execution
costs two Redis round trips (claim, then complete); a replay costs one. The capture and
replay itself lives in :mod:`idemkit.exchange`, shared with ``@idempotent``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Unpack

import redis.asyncio as aioredis

from idemkit._types import ASGIApp, Receive, Scope, Send
from idemkit.errors import ConfigurationError
from idemkit.exchange import HttpIdempotency
from idemkit.lease import LeaseStore
from idemkit.observe import Observer
from idemkit.pipeline import PipelinedLeaseStore, can_pipeline
from idemkit.policy import IdempotencyPolicy, PolicyOptions

__all__ = ["Coverage", "IdempotencyMiddleware", "as_lease_store"]


def as_lease_store(
    store: LeaseStore | aioredis.Redis | aioredis.RedisCluster,
    *,
    replicas: int = 0,
    replica_timeout_ms: int = 100,
    replica_aof: bool = False,
) -> LeaseStore:
    """The lease store for a ``store=`` option: a :class:`LeaseStore` as given, else one on
    the ``redis.asyncio`` client (plain, Sentinel-managed or ``RedisCluster``), auto-pipelined
    where the client has real connections. ``replicas`` and the other options make
    completions wait for replica acknowledgement (see :mod:`idemkit.replication`)."""
    if isinstance(store, LeaseStore):
        if replicas:
            raise ConfigurationError(
                "replicas= applies to a client; a LeaseStore carries its own replicas option"
            )
        return store
    if isinstance(store, aioredis.Redis | aioredis.RedisCluster):
        # Scripts of concurrent requests share writes and reads (see idemkit/pipeline.py),
        # per primary on a Cluster.
        kind = PipelinedLeaseStore if can_pipeline(store) else LeaseStore
        return kind(
            store,
            replicas=replicas,
            replica_timeout_ms=replica_timeout_ms,
            replica_aof=replica_aof,
        )
    raise ConfigurationError(
        f"store must be a redis.asyncio client or an idemkit.LeaseStore, got {type(store).__name__}"
    )


def _compile_paths(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(parts)) if parts else None


class Coverage:
    """Which requests a middleware covers, and which of them must carry a key.

    ``require_key``: ``True``, ``False`` or glob patterns of paths (``"/payments*"``);
    ``exempt_paths``: glob patterns of paths never touched. Shared by the ASGI middleware,
    the Django middleware and the OpenAPI documentation of both.
    """

    def __init__(
        self,
        methods: Iterable[str],
        require_key: bool | Iterable[str] = False,
        exempt_paths: Iterable[str] = (),
    ) -> None:
        if isinstance(require_key, str):
            raise ConfigurationError("require_key takes a list of path patterns, not one string")
        self.methods = frozenset(methods)
        self._require_all = require_key is True
        self._required = None if isinstance(require_key, bool) else _compile_paths(require_key)
        self._exempt = _compile_paths(exempt_paths)

    def required(self, method: str, path: str) -> bool | None:
        """None when the request is not covered, else whether it must carry a key."""
        if method not in self.methods or (self._exempt is not None and self._exempt.match(path)):
            return None
        return self._require_all or (
            self._required is not None and self._required.match(path) is not None
        )


class IdempotencyMiddleware:
    """Stores the final response of mutating requests under their ``Idempotency-Key`` and
    replays it to retries.

    ``require_key`` is ``True`` (every covered request must carry a key), ``False`` (requests
    without a key pass through) or glob patterns of paths that require one (``"/payments*"``).
    ``exempt_paths`` are glob patterns of paths the middleware never touches. ``observer``
    receives an :class:`idemkit.observe.Event` per keyed request (see ``integrations/``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: LeaseStore | aioredis.Redis | aioredis.RedisCluster,
        require_key: bool | Iterable[str] = False,
        exempt_paths: Iterable[str] = (),
        observer: Observer | None = None,
        **options: Unpack[PolicyOptions],
    ) -> None:
        self.app = app
        self.policy = IdempotencyPolicy.from_options(**options)
        self.exchange = HttpIdempotency(as_lease_store(store), self.policy, observer)
        self.engine = self.exchange.engine
        self.store = self.engine.store
        self.coverage = Coverage(self.policy.methods, require_key, exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        required = self.coverage.required(scope["method"], scope["path"])
        if required is None:
            await self.app(scope, receive, send)
            return
        await self.exchange.serve(self.app, scope, receive, send, required=required)
