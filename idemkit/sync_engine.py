"""The blocking twin of :class:`idemkit.engine.Engine`, for sync callers.

Sync plain functions (``@idempotent(key=...)`` on a ``def``) and the Django middleware under
WSGI claim, renew and finish through the blocking Redis client (:class:`SyncLeaseStore`):
never an event loop in a thread. The rules are the async engine's: claim (waiting while
another holder runs in ``wait`` mode), renew the lease from a daemon thread every third of
it, store or release, and keep retrying a failed completion in the background until the
lease would end. Store calls are bounded by the client's own socket timeouts: give the
blocking client ``socket_timeout`` (and ``socket_connect_timeout``) no larger than the
policy's ``store_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from idemkit._types import Scope
from idemkit.engine import identify, report_completion
from idemkit.errors import EvictingStoreError, StoreUnavailableError
from idemkit.lease import BUSY, Claim, Completion, SyncLeaseStore
from idemkit.observe import Observer, Stopwatch, emit
from idemkit.policy import IdempotencyPolicy
from idemkit.ratelog import RateLimitedLog

__all__ = ["SyncEngine", "SyncRenewal"]

log = logging.getLogger("idemkit")
T = TypeVar("T")

_RETRY_FIRST = 0.05
_RETRY_MAX = 1.0


class SyncEngine:
    """Claim / renew / finish on a :class:`SyncLeaseStore`; see the module docstring."""

    def __init__(
        self, store: SyncLeaseStore, policy: IdempotencyPolicy, observer: Observer | None = None
    ) -> None:
        self.store = store
        self.policy = policy
        self.observer = observer
        self.log = RateLimitedLog(log)
        self._eviction_checked = False
        self.evicting: str | None = None

    def identify(self, scope: Scope, caller: str, key: str, body: bytes) -> tuple[str, bytes]:
        """The record key (caller + key) and the fingerprint of an HTTP request."""
        return identify(self.store, self.policy, scope, caller, key, body)

    def operation(self, op: str, call: Callable[[], T]) -> T:
        """One store operation, reported to the observer as ``op`` (see ``Engine``)."""
        if self.observer is None:
            return call()
        clock = Stopwatch()
        try:
            result = call()
        except StoreUnavailableError:
            emit(self.observer, clock.event("idempotency.store", "unavailable", attrs={"op": op}))
            raise
        emit(self.observer, clock.event("idempotency.store", "ok", attrs={"op": op}))
        return result

    def check_eviction(self) -> None:
        """On first use: refuse (or warn about) a Redis that may evict records."""
        policy = self.policy
        if not self._eviction_checked:
            self.evicting = self.store.eviction_policy()
            self._eviction_checked = True
            if self.evicting is not None:
                log.log(
                    logging.ERROR if policy.evicting_store == "refuse" else logging.WARNING,
                    "idemkit: Redis maxmemory-policy is %r: it may evict idempotency records, "
                    "and a completed key whose record was evicted runs again. Configure "
                    "'maxmemory-policy noeviction'.",
                    self.evicting,
                    extra={"idemkit": "evicting-store", "maxmemory_policy": self.evicting},
                )
        if self.evicting is not None and policy.evicting_store == "refuse":
            raise EvictingStoreError(
                f"Redis maxmemory-policy is {self.evicting!r}, which may evict idempotency "
                "records; configure 'maxmemory-policy noeviction' (or evicting_store='warn')"
            )

    def claim(self, record: str, fingerprint: bytes, *, check_eviction: bool = True) -> Claim:
        """Claim the record; in wait mode, keep asking while another holder runs."""
        if check_eviction:
            self.check_eviction()
        policy, store = self.policy, self.store

        def once() -> Claim:
            return self.operation(
                "claim", lambda: store.claim(record, fingerprint, policy.lease_ms, policy.ttl_ms)
            )

        claim = once()
        deadline = time.monotonic() + policy.wait
        delay = 0.005
        while claim.outcome == BUSY and time.monotonic() < deadline:
            time.sleep(
                min(delay, max(0.0, deadline - time.monotonic()), claim.retry_after_ms / 1000)
            )
            delay = min(delay * 2, 0.25)
            claim = once()
        return claim

    def renewal(self, record: str, token: int, granted_at: float) -> SyncRenewal:
        """Start renewing the lease of ``token`` (granted by a claim sent at ``granted_at``)."""
        return SyncRenewal(self, record, token, granted_at)

    def release(self, record: str, token: int) -> Completion | None:
        """Give the key back; None when the store failed (the lease then ends on its own)."""
        try:
            released = self.operation("release", lambda: self.store.release(record, token))
        except StoreUnavailableError as exc:
            self.log.log(logging.WARNING, "store-failed", f"could not release a request: {exc}")
            return None
        return Completion.STORED if released else Completion.FENCED

    def complete(
        self,
        record: str,
        token: int,
        result: bytes,
        valid_until: float,
        late: Callable[[Completion | None], None] | None = None,
    ) -> Completion | None:
        """Store ``result`` unless fenced out; on a store failure keep retrying in a daemon
        thread until ``valid_until`` (monotonic) and return None (``late`` learns the end)."""
        ttl_ms = self.policy.ttl_ms
        try:
            done = self.operation(
                "complete", lambda: self.store.complete(record, token, result, ttl_ms)
            )
        except StoreUnavailableError as exc:
            self.log.log(logging.WARNING, "store-failed", f"could not store a result: {exc}")
        else:
            report_completion(self.log, done)
            return done
        thread = threading.Thread(
            target=self._retry_completion,
            args=(record, token, result, valid_until, late),
            name="idemkit-completion",
            daemon=True,
        )
        thread.start()
        return None

    def _retry_completion(
        self,
        record: str,
        token: int,
        result: bytes,
        valid_until: float,
        late: Callable[[Completion | None], None] | None,
    ) -> None:
        delay = _RETRY_FIRST
        ttl_ms = self.policy.ttl_ms
        while time.monotonic() + delay < valid_until:
            time.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
            try:
                done = self.operation(
                    "complete", lambda: self.store.complete(record, token, result, ttl_ms)
                )
            except StoreUnavailableError:
                continue
            if done:
                self.log.log(logging.INFO, "completed-late", "result stored after a retry")
            report_completion(self.log, done)
            if late is not None:
                late(done)
            return
        if late is not None:
            late(None)
        self.log.log(
            logging.ERROR,
            "completion-lost",
            "result not stored before the lease ended; a retry may run it again",
        )


class SyncRenewal:
    """A daemon thread renewing a lease every third of it until :meth:`stop`."""

    def __init__(self, engine: SyncEngine, record: str, token: int, granted_at: float) -> None:
        self.valid_until = granted_at + engine.policy.lease
        self.lost = False
        self._engine = engine
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(record, token), name="idemkit-renewal", daemon=True
        )
        self._thread.start()

    def _run(self, record: str, token: int) -> None:
        engine = self._engine
        policy = engine.policy
        while not self._stop.wait(policy.renew_interval):
            sent = time.monotonic()
            try:
                ok = engine.operation(
                    "renew", lambda: engine.store.renew(record, token, policy.lease_ms)
                )
            except StoreUnavailableError as exc:  # keep trying: the lease outlives two misses
                engine.log.log(logging.WARNING, "renew-failed", f"lease renewal failed: {exc}")
                continue
            if not ok:
                self.lost = True
                engine.log.log(
                    logging.WARNING, "lease-lost", "lease lost while the handler ran (taken over)"
                )
                return
            self.valid_until = sent + policy.lease

    def stop(self) -> None:
        self._stop.set()
