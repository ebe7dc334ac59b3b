"""``@idempotent(store, key=...)`` on plain functions: run once per key, then return the
stored result.

A call is named by (namespace, key) and compared by its fingerprint: the call's arguments
bound to the function's signature with defaults applied, in a canonical encoding
(:func:`idemkit.values.canonical`), so ``f("o1", 5)`` and ``f("o1", amount=5)`` are the
same call, and an argument with no canonical encoding is refused before anything runs.

Rules, the same for async and sync functions:

- the same key with other arguments raises :class:`KeyReuseError`; a call while the first
  still runs raises :class:`RequestInFlightError` (or waits, with ``wait=``);
- an exception releases the key, so a retry runs the function again;
- once the function has returned, its key is never released: its result is stored through
  the serializer (checked to read back); a result that cannot be stored leaves a record
  saying so, and later calls raise :class:`ResultNotStoredError` naming the type instead of
  running the function again;
- with the store unreachable the call raises :class:`StoreUnavailableError`, or runs without
  idempotency when ``fail_open=True``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from idemkit.codec import pack_result, unpack_result
from idemkit.engine import Engine, Renewal, outcome_of
from idemkit.errors import (
    ConfigurationError,
    InvalidKeyError,
    KeyReuseError,
    RequestInFlightError,
    StoreUnavailableError,
)
from idemkit.fingerprint import record_name
from idemkit.lease import BUSY, CLAIMED, COMPLETED, Claim, LeaseStore, SyncLeaseStore
from idemkit.observe import Observer, Stopwatch, emit
from idemkit.policy import IdempotencyPolicy
from idemkit.ratelog import RateLimitedLog
from idemkit.sync_engine import SyncEngine
from idemkit.values import MsgpackSerializer, Serializer, canonical

__all__ = ["CallSpec", "KeyFunction", "wrap_async", "wrap_sync"]

log = logging.getLogger("idemkit")
_ratelog = RateLimitedLog(log)
KeyFunction = Callable[..., object]
R = TypeVar("R")


class CallSpec:
    """What the async and sync wrappers share: naming, fingerprinting and result encoding."""

    def __init__(
        self,
        fn: Callable[..., Any],
        key: KeyFunction,
        *,
        namespace: str | None,
        policy: IdempotencyPolicy,
        serializer: Serializer | None,
        exclude: Iterable[str],
        observer: Observer | None,
    ) -> None:
        if not callable(key):
            raise ConfigurationError(f"key must be a function of the call's arguments, got {key!r}")
        qualname = getattr(fn, "__qualname__", repr(fn))
        if namespace is None:
            if "<locals>" in qualname or "<lambda>" in qualname:
                raise ConfigurationError(
                    f"{qualname} is defined inside another function (or is a lambda), so its "
                    "name is not unique: two such functions would share records; pass "
                    "namespace='...' naming what it does (e.g. 'billing.charge')"
                )
            namespace = f"{fn.__module__}.{qualname}"
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"namespace must be a non-empty str, got {namespace!r}")
        self.fn = fn
        self.name = qualname
        self.key = key
        self.namespace = namespace
        self.policy = policy
        self.serializer: Serializer = serializer or MsgpackSerializer()
        self.observer = observer
        self.signature = inspect.signature(fn)
        excluded = set(exclude)
        unknown = excluded - set(self.signature.parameters)
        if unknown:
            raise ConfigurationError(f"exclude names no parameter of {qualname}: {sorted(unknown)}")
        first = next(iter(self.signature.parameters), None)
        if first in ("self", "cls"):
            excluded.add(first)  # a method's instance is not part of what the call asks for
        self.excluded = frozenset(excluded)

    def caller(self) -> str:
        return f"fn:{self.namespace}"

    def record_key(self, store: LeaseStore | SyncLeaseStore, args: Any, kwargs: Any) -> str:
        value = self.key(*args, **kwargs)
        if isinstance(value, str | bytes) and value:
            return store.record_key(record_name(self.caller(), value))
        raise InvalidKeyError(
            f"the key function of {self.name} returned {type(value).__name__} {value!r}; it "
            "must return a non-empty str (or bytes) that names the operation"
        )

    def fingerprint(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        bound = self.signature.bind(*args, **kwargs)  # a TypeError here is the call's own
        bound.apply_defaults()
        items = {k: v for k, v in bound.arguments.items() if k not in self.excluded}
        encoded = [
            (name, canonical(value, f"argument {name!r} of {self.name}"))
            for name, value in items.items()
        ]
        return canonical(encoded)

    def outcome(self, claim: Claim) -> Any:
        """The answer to a claim that did not grant the lease."""
        if claim.outcome == COMPLETED:
            return unpack_result(claim.result or b"", self.serializer, self.name)
        if claim.outcome == BUSY:
            raise RequestInFlightError(
                f"a call of {self.name} with this key is still running; retry in "
                f"{claim.retry_after_ms / 1000:.1f} s",
                retry_after=claim.retry_after_ms / 1000,
            )
        raise KeyReuseError(
            f"this key was already used for a call of {self.name} with different arguments; "
            "use a new key for a new call"
        )

    def encode(self, result: Any) -> bytes:
        """The record of a returned result; never raises (the function has run)."""
        data, kept = pack_result(result, self.serializer)
        if not kept:
            _ratelog.log(
                logging.WARNING,
                f"unstored:{self.namespace}",
                f"the result of {self.name} (a {type(result).__name__}) cannot be stored; "
                "later calls with its key raise ResultNotStoredError",
            )
        return data

    def emit(self, clock: Stopwatch, outcome: str) -> None:
        if self.observer is not None:
            emit(self.observer, clock.event("idempotency.call", outcome, route=self.namespace))

    def emit_claim(self, clock: Stopwatch, claim: Claim) -> None:
        names = {COMPLETED: "replayed", BUSY: "conflict"}
        self.emit(clock, names.get(claim.outcome, "mismatch"))


def wrap_async(
    spec: CallSpec, store: LeaseStore, policy: IdempotencyPolicy
) -> Callable[..., Awaitable[Any]]:
    engine = Engine(store, policy, spec.observer)
    fn = spec.fn

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        record = spec.record_key(store, args, kwargs)
        fingerprint = spec.fingerprint(args, kwargs)
        clock = Stopwatch()
        sent = time.monotonic()
        try:
            claim = await engine.claim(record, fingerprint)
        except StoreUnavailableError:
            if not policy.fail_open:
                raise
            spec.emit(clock, "bypassed")
            return await fn(*args, **kwargs)
        if claim.outcome != CLAIMED:
            spec.emit_claim(clock, claim)
            return spec.outcome(claim)
        renewal = Renewal(engine, record, claim.token, sent)
        try:
            result = await fn(*args, **kwargs)
        except BaseException:
            renewal.stop()
            spec.emit(clock, "released")
            await engine.finish(record, claim.token, None)
            raise
        renewal.stop()
        done = await engine.finish(record, claim.token, spec.encode(result), renewal.valid_until)
        spec.emit(clock, outcome_of(done))
        return result

    return wrapper


def wrap_sync(
    spec: CallSpec, store: SyncLeaseStore, policy: IdempotencyPolicy
) -> Callable[..., Any]:
    engine = SyncEngine(store, policy, spec.observer)
    fn = spec.fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        record = spec.record_key(store, args, kwargs)
        fingerprint = spec.fingerprint(args, kwargs)
        clock = Stopwatch()
        sent = time.monotonic()
        try:
            granted = engine.claim(record, fingerprint)
        except StoreUnavailableError:
            if not policy.fail_open:
                raise
            spec.emit(clock, "bypassed")
            return fn(*args, **kwargs)
        if granted.outcome != CLAIMED:
            spec.emit_claim(clock, granted)
            return spec.outcome(granted)
        renewal = engine.renewal(record, granted.token, sent)
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            renewal.stop()
            spec.emit(clock, "released")
            engine.release(record, granted.token)  # on a store failure the lease ends itself
            raise
        renewal.stop()
        done = engine.complete(record, granted.token, spec.encode(result), renewal.valid_until)
        spec.emit(clock, outcome_of(done))
        return result

    return wrapper
