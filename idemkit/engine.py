"""The claim / renew / finish cycle of one idempotent execution, shared by the middleware
and the decorator. Every step is one call to the fenced lease store, bounded by the
policy's ``store_timeout`` whatever the Redis client's own retry settings."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from idemkit._types import Scope
from idemkit.deadline import Deadlines
from idemkit.errors import EvictingStoreError, StoreUnavailableError
from idemkit.fingerprint import record_name, request_fingerprint
from idemkit.lease import BUSY, Claim, Completion, LeaseStore
from idemkit.observe import Observer, Stopwatch, emit
from idemkit.policy import IdempotencyPolicy
from idemkit.ratelog import RateLimitedLog

__all__ = ["Engine", "Renewal", "identify", "outcome_of", "report_completion"]

log = logging.getLogger("idemkit")
T = TypeVar("T")

# Completions that failed are retried with this backoff until the lease would end.
_RETRY_FIRST = 0.05
_RETRY_MAX = 1.0


class Renewal:
    """Keeps a lease alive while a handler runs, and knows until when it is valid.

    A timer, not a task: handlers that finish within one renewal interval (nearly all of them)
    cost one ``call_later`` and no extra round trip.
    """

    __slots__ = (
        "_engine",
        "_handle",
        "_record",
        "_stopped",
        "_task",
        "_token",
        "lost",
        "valid_until",
    )

    def __init__(self, engine: Engine, record: str, token: int, granted_at: float) -> None:
        self._engine = engine
        self._record = record
        self._token = token
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self.lost = False
        # Monotonic time until which the lease surely holds: counted from when the claim
        # was sent, so it never overestimates the server's view.
        self.valid_until = granted_at + engine.policy.lease
        loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = loop.call_later(
            engine.policy.renew_interval, self._fire
        )

    def _fire(self) -> None:
        self._handle = None
        if not self._stopped:
            self._task = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        policy = self._engine.policy
        sent = time.monotonic()
        try:
            ok = await self._engine.operation(
                "renew", self._engine.store.renew(self._record, self._token, policy.lease_ms)
            )
        except StoreUnavailableError as exc:  # keep trying: the lease outlives two misses
            self._engine.log.log(logging.WARNING, "renew-failed", f"lease renewal failed: {exc}")
            ok = True
        else:
            if ok:
                self.valid_until = sent + policy.lease
        if not ok:
            self.lost = True
            self._engine.log.log(
                logging.WARNING, "lease-lost", "lease lost while the handler ran (taken over)"
            )
            return
        if not self._stopped:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(policy.renew_interval, self._fire)

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()


def identify(
    store: Any, policy: IdempotencyPolicy, scope: Scope, caller: str, key: str, body: bytes
) -> tuple[str, bytes]:
    """The record key (caller + key) and the fingerprint of an HTTP request; ``store`` is a
    :class:`LeaseStore` or :class:`~idemkit.lease.SyncLeaseStore` (it names the record)."""
    record: str = store.record_key(record_name(caller, key))
    wanted = policy.fingerprint_headers
    headers = sorted((n, v) for n, v in scope["headers"] if n in wanted) if wanted else ()
    fingerprint = request_fingerprint(
        scope["method"], scope["path"], scope.get("query_string", b""), body, headers
    )
    return record, fingerprint


def report_completion(ratelog: RateLimitedLog, done: Completion) -> None:
    """Log a completion that did not store: fenced out, or the record is gone."""
    if done is Completion.FENCED:
        ratelog.log(
            logging.WARNING,
            "fenced",
            "result not stored: a newer fencing token owns the record "
            "(the handler outlived its lease)",
        )
    elif done is Completion.LOST:
        ratelog.log(
            logging.ERROR,
            "lost",
            "result not stored: the record is gone (Redis restarted without AOF, failed "
            "over or evicted it); a retry will run the handler again",
        )


class Engine:
    """``observer`` receives an ``idempotency.store`` event per store operation (``op``:
    claim, complete, release or renew; outcome ``ok`` or ``unavailable``; its duration)."""

    def __init__(
        self, store: LeaseStore, policy: IdempotencyPolicy, observer: Observer | None = None
    ) -> None:
        self.store = store
        self.policy = policy
        self.observer = observer
        self._background: set[asyncio.Task[Completion | None]] = set()
        # One line per cause and interval during an outage (per middleware or decorator).
        self.log = RateLimitedLog(log)
        self._deadlines = Deadlines(policy.store_timeout)
        self._eviction_checked = False
        self._eviction_task: asyncio.Future[None] | None = None
        self.evicting: str | None = None  # the evicting maxmemory-policy, once checked

    def identify(self, scope: Scope, caller: str, key: str, body: bytes) -> tuple[str, bytes]:
        """The record key (caller + key) and the fingerprint of an HTTP request."""
        return identify(self.store, self.policy, scope, caller, key, body)

    async def bounded(self, operation: Awaitable[T]) -> T:
        """``operation`` within ``store_timeout``; a timeout is a store outage."""
        try:
            return await self._deadlines.run(operation)
        except TimeoutError:
            raise StoreUnavailableError(
                f"Redis did not answer within store_timeout ({self.policy.store_timeout} s)"
            ) from None

    async def operation(self, op: str, operation: Awaitable[T]) -> T:
        """One store operation, bounded, and reported to the observer as ``op``."""
        if self.observer is None:
            return await self.bounded(operation)
        clock = Stopwatch()
        try:
            result = await self.bounded(operation)
        except StoreUnavailableError:
            emit(self.observer, clock.event("idempotency.store", "unavailable", attrs={"op": op}))
            raise
        emit(self.observer, clock.event("idempotency.store", "ok", attrs={"op": op}))
        return result

    async def check_eviction(self) -> None:
        """On first use: refuse (or warn about) a Redis that may evict records.

        One check for all the requests that arrive together (a shared task), so a burst of
        first requests costs one ``CONFIG GET``, not one connection each; a check that
        failed (Redis down) is tried again by the next request.
        """
        if not self._eviction_checked:
            task = self._eviction_task
            if (
                task is None
                or task.get_loop() is not asyncio.get_running_loop()
                or (task.done() and task.exception() is not None)
            ):
                task = self._eviction_task = asyncio.ensure_future(self._read_eviction_policy())
            await asyncio.shield(task)
        if self.evicting is not None and self.policy.evicting_store == "refuse":
            raise EvictingStoreError(
                f"Redis maxmemory-policy is {self.evicting!r}, which may evict idempotency "
                "records; configure 'maxmemory-policy noeviction' (or evicting_store='warn')"
            )

    async def _read_eviction_policy(self) -> None:
        self.evicting = await self.bounded(self.store.eviction_policy())
        self._eviction_checked = True
        if self.evicting is not None:
            log.log(
                logging.ERROR if self.policy.evicting_store == "refuse" else logging.WARNING,
                "idemkit: Redis maxmemory-policy is %r: it may evict idempotency records, "
                "and a completed key whose record was evicted runs again. %s Configure "
                "'maxmemory-policy noeviction'.",
                self.evicting,
                "Keyed requests are refused (evicting_store='refuse')."
                if self.policy.evicting_store == "refuse"
                else "Serving anyway (evicting_store='warn').",
                extra={"idemkit": "evicting-store", "maxmemory_policy": self.evicting},
            )

    async def claim(self, record: str, fingerprint: bytes) -> Claim:
        """Claim the record; in wait mode, keep asking while another holder runs."""
        await self.check_eviction()
        policy = self.policy
        claim = await self.operation(
            "claim", self.store.claim(record, fingerprint, policy.lease_ms, policy.ttl_ms)
        )
        if claim.outcome != BUSY or policy.wait <= 0:
            return claim
        deadline = time.monotonic() + policy.wait
        delay = 0.005
        while claim.outcome == BUSY:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining, claim.retry_after_ms / 1000))
            delay = min(delay * 2, 0.25)
            claim = await self.operation(
                "claim", self.store.claim(record, fingerprint, policy.lease_ms, policy.ttl_ms)
            )
        return claim

    async def finish(
        self,
        record: str,
        token: int,
        result: bytes | None,
        valid_until: float | None = None,
        late: Callable[[Completion | None], None] | None = None,
    ) -> Completion | None:
        """Store ``result`` (or release the key when it is None) unless fenced out.

        Returns the store's :class:`Completion` (``STORED``; ``FENCED``: a newer token owns
        the record; ``LOST``: the record is gone), or None when the store failed. Never
        raises for store failures: by now the handler has run. A completion that failed
        keeps being retried in the background until ``valid_until`` (the end of the lease,
        monotonic): a completion written within the lease still prevents a second execution;
        ``late`` learns how that ended.
        """
        try:
            ok = await self._finish(record, token, result)
        except asyncio.CancelledError:
            # The caller is being cancelled mid-write; finish in the background so the key is
            # not left locked until its lease expires.
            self._spawn(self._finish(record, token, result))
            raise
        if ok is None and result is not None and valid_until is not None:
            self._spawn(self._retry_completion(record, token, result, valid_until, late))
        return ok

    def _spawn(self, operation: Coroutine[Any, Any, Completion | None]) -> None:
        task = asyncio.get_running_loop().create_task(operation)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _retry_completion(
        self,
        record: str,
        token: int,
        result: bytes,
        valid_until: float,
        late: Callable[[Completion | None], None] | None,
    ) -> Completion | None:
        delay = _RETRY_FIRST
        while time.monotonic() + delay < valid_until:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
            done = await self._finish(record, token, result, quiet=True)
            if done is not None:
                if done:
                    self.log.log(logging.INFO, "completed-late", "result stored after a retry")
                if late is not None:
                    late(done)
                return done
        if late is not None:
            late(None)
        self.log.log(
            logging.ERROR,
            "completion-lost",
            "result not stored before the lease ended; a retry may run the handler again",
        )
        return None

    async def _finish(
        self, record: str, token: int, result: bytes | None, *, quiet: bool = False
    ) -> Completion | None:
        store = self.store
        try:
            if result is None:
                released = await self.operation("release", store.release(record, token))
                return Completion.STORED if released else Completion.FENCED
            done = await self.operation(
                "complete", store.complete(record, token, result, self.policy.ttl_ms)
            )
        except StoreUnavailableError as exc:
            if not quiet:
                what = "release" if result is None else "store the result of"
                self.log.log(logging.WARNING, "store-failed", f"could not {what} a request: {exc}")
            return None
        report_completion(self.log, done)
        return done


def outcome_of(done: Completion | None) -> str:
    """The event name of a completion: executed, fenced, lost or store_failed."""
    if done is None:
        return "store_failed"
    return {Completion.STORED: "executed", Completion.FENCED: "fenced"}.get(done, "lost")
