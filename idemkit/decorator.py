"""``@idempotent``: the middleware's semantics for one handler or one plain function.

* HTTP handlers (Starlette endpoints, FastAPI path operations, Litestar route handlers):
  the key comes from the ``Idempotency-Key`` header and the request goes through the same
  capture and replay path as :class:`~idemkit.middleware.IdempotencyMiddleware`
  (:mod:`idemkit.exchange`); see :mod:`idemkit.handlers` for how each framework plugs in.
* Plain async and sync functions take their key from ``key(*args, **kwargs)`` and store
  their result; see :mod:`idemkit.calls`.

Sync functions use the blocking Redis client (``redis.Redis`` or a :class:`SyncLeaseStore`),
never an event loop in a thread.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, Unpack

import redis

from idemkit.calls import CallSpec, KeyFunction, wrap_async, wrap_sync
from idemkit.errors import ConfigurationError
from idemkit.exchange import HttpIdempotency
from idemkit.handlers import decorate_handler
from idemkit.lease import SyncLeaseStore
from idemkit.middleware import as_lease_store
from idemkit.observe import Observer
from idemkit.policy import IdempotencyPolicy, PolicyOptions
from idemkit.values import Serializer

__all__ = ["idempotent"]

F = TypeVar("F")


def idempotent(
    store: Any,
    *,
    key: KeyFunction | None = None,
    namespace: str | None = None,
    serializer: Serializer | None = None,
    exclude: Iterable[str] = (),
    require_key: bool = True,
    framework: str | None = None,
    observer: Observer | None = None,
    **options: Unpack[PolicyOptions],
) -> Callable[[F], F]:
    """Run the decorated handler or function once per key; see the module docstring.

    Plain functions (``key=`` given): ``namespace`` names the operation's records (default
    the function's module and qualified name; required for nested functions and lambdas),
    ``serializer`` stores results (default :class:`idemkit.values.MsgpackSerializer`),
    ``exclude`` leaves parameters out of the fingerprint. HTTP handlers: ``require_key``
    (default True) answers 400 to requests without a key; ``framework`` overrides detection.
    """
    policy = IdempotencyPolicy.from_options(**options)
    exclude = tuple(exclude)

    def decorate(target: F) -> F:
        if key is not None:
            is_async = inspect.iscoroutinefunction(target)
            lease_store = as_lease_store(store) if is_async else _as_sync_store(store)
            spec = CallSpec(
                target,  # type: ignore[arg-type]
                key,
                namespace=namespace,
                policy=policy,
                serializer=serializer,
                exclude=exclude,
                observer=observer,
            )
            if isinstance(lease_store, SyncLeaseStore):
                return wrap_sync(spec, lease_store, policy)  # type: ignore[return-value]
            return wrap_async(spec, lease_store, policy)  # type: ignore[return-value]
        if namespace is not None or serializer is not None or exclude:
            raise ConfigurationError(
                "namespace, serializer and exclude are for plain functions (with key=...); an "
                "HTTP handler's records are named by caller and Idempotency-Key"
            )
        exchange = HttpIdempotency(_as_async_store(store), policy, observer)
        handler: F = decorate_handler(
            target, exchange, require_key=require_key, framework=framework
        )
        return handler

    return decorate


def _as_async_store(store: Any) -> Any:
    if isinstance(store, redis.Redis | redis.RedisCluster | SyncLeaseStore):
        raise ConfigurationError(
            "HTTP handlers need an asyncio client (redis.asyncio.Redis): the blocking client "
            "is for sync plain functions (with key=...)"
        )
    return as_lease_store(store)


def _as_sync_store(store: object) -> SyncLeaseStore:
    if isinstance(store, SyncLeaseStore):
        return store
    if isinstance(store, redis.Redis | redis.RedisCluster):
        return SyncLeaseStore(store)
    raise ConfigurationError(
        "sync functions need a blocking client: pass a redis.Redis or an idemkit.SyncLeaseStore"
    )
