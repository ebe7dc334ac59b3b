"""``@idempotent``: the middleware's semantics for one handler or one plain function.

* Starlette endpoints and FastAPI path operations (any function that receives a
  ``starlette.requests.Request``) read the ``Idempotency-Key`` header and get the same
  HTTP behaviour as :class:`~idemkit.middleware.IdempotencyMiddleware`.
* Plain async and sync functions take their key from ``key(*args, **kwargs)``; the result is
  stored with msgpack and returned again to later calls with the same key. A call while the
  first still runs raises :class:`RequestInFlightError`; the same key with other arguments
  raises :class:`KeyReuseError`.

Sync functions use the blocking Redis client (``redis.Redis`` or a :class:`SyncLeaseStore`),
never an event loop in a thread.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable
from hashlib import blake2b
from typing import Any, ParamSpec, TypeVar, Unpack, cast

import msgpack
import redis
import redis.asyncio as aioredis

from idemkit import problem as problems
from idemkit.codec import (
    StoredResponse,
    decode_response,
    decode_value,
    encode_response,
    encode_value,
    is_value_record,
)
from idemkit.engine import Engine, Renewal, replay_headers
from idemkit.errors import (
    CodecError,
    ConfigurationError,
    InvalidKeyError,
    KeyReuseError,
    RequestInFlightError,
    StoreUnavailableError,
)
from idemkit.fingerprint import record_name
from idemkit.keys import key_from_headers
from idemkit.lease import BUSY, COMPLETED, Claim, LeaseStore, SyncLeaseStore
from idemkit.middleware import as_lease_store
from idemkit.policy import IdempotencyPolicy, PolicyOptions

__all__ = ["idempotent"]

P = ParamSpec("P")
R = TypeVar("R")
KeyFunction = Callable[..., str]

_KEY = "idempotency-key"


def idempotent(
    store: LeaseStore | SyncLeaseStore | aioredis.Redis | redis.Redis | Any,
    *,
    key: KeyFunction | None = None,
    **options: Unpack[PolicyOptions],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the decorated function once per key; see the module docstring."""
    policy = IdempotencyPolicy.from_options(**options)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):
            return cast(Callable[P, R], _async_wrapper(fn, store, key, policy))
        if key is None:
            raise ConfigurationError(
                f"{fn.__qualname__} is a sync function: pass key=... to take the idempotency "
                "key from its arguments (HTTP endpoints must be async)"
            )
        return _sync_wrapper(fn, _as_sync_store(store), key, policy)

    return decorate


def _as_sync_store(store: object) -> SyncLeaseStore:
    if isinstance(store, SyncLeaseStore):
        return store
    if isinstance(store, redis.Redis | redis.RedisCluster):
        return SyncLeaseStore(store)
    raise ConfigurationError(
        "sync functions need a blocking client: pass a redis.Redis or an idemkit.SyncLeaseStore"
    )


def _call_fingerprint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    # repr() for values msgpack cannot encode keeps the fingerprint total; it is only compared
    # for equality, never decoded.
    packed = msgpack.packb([list(args), kwargs], default=repr, use_bin_type=True)
    return blake2b(packed, digest_size=16).digest()


def _function_record(store: LeaseStore | SyncLeaseStore, fn: Callable[..., Any], key: str) -> str:
    return store.record_key(record_name(f"fn:{fn.__module__}.{fn.__qualname__}", key))


def _function_outcome(claim: Claim, fn: Callable[..., Any]) -> Any:
    if claim.outcome == COMPLETED:
        return decode_value(claim.result or b"")
    if claim.outcome == BUSY:
        raise RequestInFlightError(
            f"a call of {fn.__qualname__} with this key is still running; retry in "
            f"{claim.retry_after_ms / 1000:.1f} s",
            retry_after=claim.retry_after_ms / 1000,
        )
    raise KeyReuseError(
        f"this key was already used for a call of {fn.__qualname__} with different arguments; "
        "use a new key for a new call"
    )


def _async_wrapper(
    fn: Callable[..., Awaitable[Any]],
    store: object,
    key: KeyFunction | None,
    policy: IdempotencyPolicy,
) -> Callable[..., Awaitable[Any]]:
    engine = Engine(as_lease_store(cast(Any, store)), policy)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if key is None:
            request = _find_request(args, kwargs)
            if request is None:
                raise ConfigurationError(
                    f"{fn.__qualname__} received no starlette Request: add a `request: Request` "
                    "parameter, or pass key=... to take the key from the arguments"
                )
            return await _http_call(engine, fn, request, args, kwargs)
        record = _function_record(engine.store, fn, key(*args, **kwargs))
        claim = await engine.claim(record, _call_fingerprint(args, kwargs))
        if claim.outcome != 0:
            return _function_outcome(claim, fn)
        renewal = Renewal(engine, record, claim.token)
        try:
            result = await fn(*args, **kwargs)
            data = encode_value(result)
        except BaseException:
            renewal.stop()
            await engine.finish(record, claim.token, None)
            raise
        renewal.stop()
        await engine.finish(record, claim.token, data)
        return result

    return wrapper


def _sync_wrapper(
    fn: Callable[P, R], store: SyncLeaseStore, key: KeyFunction, policy: IdempotencyPolicy
) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        record = _function_record(store, fn, key(*args, **kwargs))
        claim = store.claim(record, _call_fingerprint(args, kwargs), policy.lease_ms, policy.ttl_ms)
        if claim.outcome != 0:
            return cast(R, _function_outcome(claim, fn))
        stop = threading.Event()
        renewer = threading.Thread(
            target=_renew_until, args=(store, record, claim.token, policy, stop), daemon=True
        )
        renewer.start()
        try:
            result = fn(*args, **kwargs)
            data = encode_value(result)
        except BaseException:
            stop.set()
            _quietly(store.release, record, claim.token)
            raise
        finally:
            stop.set()
        _quietly(store.complete, record, claim.token, data, policy.ttl_ms)
        return result

    return wrapper


def _renew_until(
    store: SyncLeaseStore, record: str, token: int, policy: IdempotencyPolicy, stop: threading.Event
) -> None:
    while not stop.wait(policy.renew_interval):
        try:
            if not store.renew(record, token, policy.lease_ms):
                return
        except StoreUnavailableError:
            continue


def _quietly(op: Callable[..., bool], *args: Any) -> None:
    # On failure the lease expires on its own; the result was already computed.
    with contextlib.suppress(StoreUnavailableError):
        op(*args)


def _find_request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        from starlette.requests import Request
    except ImportError:  # pragma: no cover - starlette is an extra
        return None
    for value in (*args, *kwargs.values()):
        if isinstance(value, Request):
            return value
    return None


async def _http_call(
    engine: Engine,
    fn: Callable[..., Awaitable[Any]],
    request: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    from starlette.responses import Response, StreamingResponse

    policy = engine.policy
    if request.method not in policy.methods:
        return await fn(*args, **kwargs)
    try:
        key = key_from_headers([v.encode("latin-1") for v in request.headers.getlist(_KEY)])
    except InvalidKeyError as exc:
        return _problem_response(problems.invalid_key(str(exc)))
    if key is None:
        return _problem_response(problems.missing_key())
    body = await request.body()
    if len(body) > policy.max_body_bytes:
        return _problem_response(problems.body_too_large(policy.max_body_bytes))
    record, fingerprint = engine.identify(request.scope, key, body)
    try:
        claim = await engine.claim(record, fingerprint)
    except StoreUnavailableError:
        if policy.fail_open:
            return await fn(*args, **kwargs)
        return _problem_response(problems.store_unavailable(policy.retry_after))
    if claim.outcome == COMPLETED:
        data = claim.result or b""
        if is_value_record(data):
            return decode_value(data)  # a plain result, serialised again by the framework
        try:
            stored = decode_response(data)
        except CodecError as exc:
            return _problem_response(problems.unreadable(str(exc)))
        response = Response(content=stored.body, status_code=stored.status)
        response.raw_headers = replay_headers(stored)
        return response
    problem = problems.for_claim(claim.outcome, policy.retry_after)
    if problem is not None:
        return _problem_response(problem)

    renewal = Renewal(engine, record, claim.token)
    try:
        response = await fn(*args, **kwargs)
    except BaseException:
        renewal.stop()
        await engine.finish(record, claim.token, None)
        raise
    renewal.stop()
    if not isinstance(response, Response):
        # FastAPI-style handlers return data that the framework serialises afterwards.
        value = response.model_dump(mode="json") if hasattr(response, "model_dump") else response
        try:
            data = encode_value(value)
        except BaseException:
            await engine.finish(record, claim.token, None)
            raise
        await engine.finish(record, claim.token, data)
        return response
    if response.status_code in policy.release_statuses:
        await engine.finish(record, claim.token, None)
        return response
    headers = [
        (n, v) for n, v in response.raw_headers if n.lower() not in policy.replay_exclude_headers
    ]
    streaming = isinstance(response, StreamingResponse) or not hasattr(response, "body")
    body_bytes = b"" if streaming else bytes(response.body)
    omitted = streaming or len(body_bytes) > policy.max_response_bytes
    stored = StoredResponse(
        response.status_code, headers, b"" if omitted else body_bytes, body_omitted=omitted
    )
    await engine.finish(record, claim.token, encode_response(stored))
    return response


def _problem_response(problem: problems.Problem) -> Any:
    from starlette.responses import Response

    body = problem.body()
    response = Response(content=body, status_code=problem.status)
    response.raw_headers = problem.headers(body)
    return response
