"""The claim / renew / finish cycle of one idempotent execution, shared by the middleware
and the decorator. Every step is one call to the fenced lease store."""

from __future__ import annotations

import asyncio
import logging
import time

from idemkit._types import Scope
from idemkit.codec import StoredResponse
from idemkit.fingerprint import record_name, request_fingerprint
from idemkit.lease import BUSY, Claim, LeaseStore
from idemkit.policy import IdempotencyPolicy

__all__ = ["Engine", "Renewal", "replay_headers"]

log = logging.getLogger("idemkit")


class Renewal:
    """Keeps a lease alive while a handler runs.

    A timer, not a task: handlers that finish within one renewal interval (nearly all of them)
    cost one ``call_later`` and no extra round trip.
    """

    __slots__ = ("_engine", "_handle", "_record", "_stopped", "_task", "_token", "lost")

    def __init__(self, engine: Engine, record: str, token: int) -> None:
        self._engine = engine
        self._record = record
        self._token = token
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self.lost = False
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
        try:
            ok = await self._engine.store.renew(self._record, self._token, policy.lease_ms)
        except Exception as exc:  # keep trying: the lease outlives two missed renewals
            log.warning("idemkit: lease renewal failed, will retry: %s", exc)
            ok = True
        if not ok:
            self.lost = True
            log.warning("idemkit: lease lost while the handler ran (record %s)", self._record)
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


class Engine:
    def __init__(self, store: LeaseStore, policy: IdempotencyPolicy) -> None:
        self.store = store
        self.policy = policy
        self._background: set[asyncio.Task[bool | None]] = set()

    def identify(self, scope: Scope, key: str, body: bytes) -> tuple[str, bytes]:
        """The record key (caller + key) and the fingerprint of an HTTP request."""
        policy = self.policy
        record = self.store.record_key(record_name(policy.caller(scope), key))
        wanted = policy.fingerprint_headers
        headers = sorted((n, v) for n, v in scope["headers"] if n in wanted) if wanted else ()
        fingerprint = request_fingerprint(
            scope["method"], scope["path"], scope.get("query_string", b""), body, headers
        )
        return record, fingerprint

    async def claim(self, record: str, fingerprint: bytes) -> Claim:
        """Claim the record; in wait mode, keep asking while another holder runs."""
        policy = self.policy
        claim = await self.store.claim(record, fingerprint, policy.lease_ms, policy.ttl_ms)
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
            claim = await self.store.claim(record, fingerprint, policy.lease_ms, policy.ttl_ms)
        return claim

    async def finish(self, record: str, token: int, result: bytes | None) -> bool | None:
        """Store ``result`` (or release the key when it is None) unless fenced out.

        Returns True when the store accepted it, False when a newer fencing token owns the
        record, None when the store failed. Never raises for store failures: by now the
        handler has run, and a failure only means the lease will expire on its own.
        """
        try:
            return await self._finish(record, token, result)
        except asyncio.CancelledError:
            # The caller is being cancelled mid-write; finish in the background so the key is
            # not left locked until its lease expires.
            task = asyncio.get_running_loop().create_task(self._finish(record, token, result))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise

    async def _finish(self, record: str, token: int, result: bytes | None) -> bool | None:
        try:
            if result is None:
                return await self.store.release(record, token)
            ok = await self.store.complete(record, token, result, self.policy.ttl_ms)
        except Exception as exc:
            log.warning(
                "idemkit: could not %s record %s: %s",
                "release" if result is None else "store the result of",
                record,
                exc,
            )
            return None
        if not ok:
            log.warning(
                "idemkit: result not stored: a newer fencing token owns record %s "
                "(the handler outlived its lease)",
                record,
            )
        return ok


def replay_headers(stored: StoredResponse) -> list[tuple[bytes, bytes]]:
    """Headers of a replayed response: the stored ones, a fresh length and the replay marks."""
    headers = list(stored.headers)
    headers.append((b"content-length", str(len(stored.body)).encode()))
    headers.append((b"idempotent-replayed", b"true"))
    if stored.body_omitted:
        headers.append((b"idempotent-body-omitted", b"true"))
    return headers
