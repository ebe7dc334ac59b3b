"""Fenced locks: a Redis lock whose every grant carries a fencing token.

A lock is a fenced lease record (:mod:`idemkit.lease`) claimed in *owner mode*: the claim
script grants the lease and returns a token larger than every token granted for that name
before, in one round trip. Release and extend are one round trip each. The token, not the
lock, is what keeps a paused holder from corrupting data: pass it to a
:class:`~idemkit.fence.Fence` (or the SQL helpers there), which refuses writes older than
the newest token it has seen.

Waiters do not poll on a timer: a release pushes one wake-up onto a list under the same
hash tag and a waiter blocked in ``BLPOP`` retries at once. The block is bounded by the
holder's remaining lease (expiry sends no wake-up) and by ``poll_interval``.

:class:`FencedLock` runs on ``redis.asyncio``; :class:`SyncFencedLock` on the blocking client
(no event loop in a thread). One handle is one would-be holder: share the name, not the
handle, between tasks, threads or processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Final, Generic, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from idemkit.errors import (
    ConfigurationError,
    InvalidLockNameError,
    LeaseLostError,
    LockNotHeldError,
    LockTimeoutError,
    LockUsageError,
    StoreUnavailableError,
)
from idemkit.lease import (
    CLAIMED,
    Claim,
    LeaseStore,
    SyncLeaseStore,
    config_reply,
    config_targets,
)
from idemkit.observe import Observer, Stopwatch, emit

__all__ = [
    "MAX_NAME_LENGTH",
    "FencedLock",
    "LostCallback",
    "SyncFencedLock",
    "check_name",
    "eviction_warning",
]

log = logging.getLogger("idemkit.lock")

MAX_NAME_LENGTH: Final = 512
DEFAULT_LOCK_PREFIX: Final = "idemkit:lock:"
# The record (and with it the token counter) outlives the lease by this much. Losing it is
# survivable (the claim floors tokens at server microseconds) but keeps tokens dense.
DEFAULT_RETENTION_MS: Final = 7 * 24 * 3600 * 1000
# Redis reads a BLPOP timeout of 0 as "forever": never block for less than this.
_MIN_BLOCK_S: Final = 0.002
# Client-side validity is the lease minus this share, to absorb clock drift between the
# client's monotonic clock and the server's wall clock (Redlock's 1% + 2 ms).
_DRIFT_FACTOR: Final = 0.01
_DRIFT_S: Final = 0.002
# How long an unclaimed wake-up stays on the signal list.
_SIGNAL_MS: Final = 2_000

LostCallback = Callable[[LeaseLostError], object]


def check_name(name: object, what: str = "lock") -> str:
    """``name`` if it can name a lock, semaphore or fenced resource, else a clear error."""
    if not isinstance(name, str) or not name:
        raise InvalidLockNameError(f"{what} name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidLockNameError(
            f"{what} name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if "{" in name or "}" in name:
        # The name becomes the Redis Cluster hash tag; a brace would cut it short.
        raise InvalidLockNameError(f"{what} name must not contain braces, got {name!r}")
    return name


def eviction_warning(config: dict[Any, Any]) -> str | None:
    """A warning if a ``CONFIG GET maxmemory-policy`` reply allows Redis to evict keys."""
    policy = config.get("maxmemory-policy", config.get(b"maxmemory-policy"))
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy is None or policy == "noeviction":
        return None
    # allkeys-* may drop the token counter, volatile-* a live lease (a silent release).
    return (
        f"Redis maxmemory-policy is {policy!r}: under memory pressure it may evict a live lock "
        "or its token counter; run the lock database with 'noeviction'"
    )


def _check_ms(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{what} must be a positive int of milliseconds, got {value!r}")
    return value


def _deadline(timeout: float | None, blocking: bool) -> float | None:
    if not blocking:
        if timeout is not None:
            raise ConfigurationError("a non-blocking acquire cannot take a timeout")
        return time.monotonic()
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise ConfigurationError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
    return time.monotonic() + timeout


StoreT = TypeVar("StoreT", LeaseStore, SyncLeaseStore)
EventT = TypeVar("EventT", asyncio.Event, threading.Event)


class _Handle(Generic[StoreT, EventT]):
    """State and rules shared by the async and the sync handle."""

    _default_prefix = DEFAULT_LOCK_PREFIX
    _what = "lock"

    def __init__(
        self,
        store: StoreT,
        name: str,
        *,
        slots: int,
        lease_ms: int,
        retention_ms: int,
        watchdog: bool,
        on_lost: LostCallback | None,
        poll_interval: float,
        observer: Observer | None = None,
    ) -> None:
        self.name = check_name(name, self._what)
        self.lease_ms = _check_ms(lease_ms, "lease_ms")
        self.retention_ms = _check_ms(retention_ms, "retention_ms")
        if retention_ms < lease_ms:
            raise ConfigurationError(
                f"retention_ms ({retention_ms}) must be at least lease_ms ({lease_ms})"
            )
        if not isinstance(poll_interval, int | float) or poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self.poll_interval = float(poll_interval)
        self.watchdog = watchdog
        self.on_lost = on_lost
        # Events: lock.acquire (the wait, and how it ended), lock.hold (grant to release),
        # lock.lost. No lock names in them: names often carry ids (metric cardinality).
        self.observer = observer
        self._held_since: Stopwatch | None = None
        self._store: StoreT = store
        self._slots = slots
        base = store.record_key(self.name)
        self.keys: Sequence[str] = [base] if slots == 1 else [f"{base}:{i}" for i in range(slots)]
        self.signal_key = f"{base}:signal"
        self._owner: str | None = None
        self._token: int | None = None
        self._slot = 0
        self._valid_until = 0.0
        self._lost: LeaseLostError | None = None
        self.lost_event: EventT = self._new_event()

    def _new_event(self) -> EventT:
        raise NotImplementedError

    # -- state ------------------------------------------------------------------------------

    @property
    def token(self) -> int:
        """The fencing token of the current grant; raises if the lock is not (or no longer) held.

        Read it at every fenced call (``fence.write(..., token=lock.token)``) so a lock that
        the watchdog found lost stops the write with :class:`LeaseLostError`.
        """
        self.ensure_held()
        assert self._token is not None
        return self._token

    @property
    def held(self) -> bool:
        """True while this handle holds a grant that is neither lost nor past its lease locally."""
        return (
            self._token is not None and self._lost is None and time.monotonic() < self._valid_until
        )

    @property
    def lost(self) -> bool:
        """True once a renewal, extend or release found the lease gone."""
        return self._lost is not None

    def ensure_held(self) -> None:
        """Raise unless this handle holds the lock: :class:`LockNotHeldError` if it never did,
        :class:`LeaseLostError` if it was lost or its lease ran out without renewal."""
        if self._token is None:
            raise LockNotHeldError(f"{self._what} {self.name!r} is not held by this handle")
        if self._lost is not None:
            raise LeaseLostError(str(self._lost), token=self._token)
        if time.monotonic() >= self._valid_until:
            raise LeaseLostError(
                f"the lease on {self._what} {self.name!r} (token {self._token}) ran out without "
                "renewal; another holder may have a newer token",
                token=self._token,
            )

    def _begin_acquire(self) -> str:
        if self._token is not None:
            if self.held:
                raise LockUsageError(
                    f"this handle already holds {self._what} {self.name!r}; locks are not "
                    "reentrant: use one handle per task or thread"
                )
            # The previous grant was lost or ran out: give it back if it still stands (it
            # cannot hurt: a newer holder's token makes the release a no-op) and start afresh.
            self._stop_watchdog()
            token, key, _ = self._cleared()
            self._give_back_dead(key, token)
        # A failed attempt (client timeout) leaves its owner id behind so the retry is
        # idempotent: if the first attempt was granted after all, the claim returns its token.
        if self._owner is None:
            self._owner = secrets.token_hex(16)
        return self._owner

    def _report(self, name: str, outcome: str, clock: Stopwatch | None) -> None:
        if self.observer is not None:
            attrs = {"kind": self._what}
            event = (clock or Stopwatch()).event(name, outcome, attrs=attrs)
            emit(self.observer, event)

    def _report_acquire(self, clock: Stopwatch, exc: BaseException | None) -> None:
        if exc is None:
            outcome = "acquired"
        elif isinstance(exc, LockTimeoutError):
            outcome = "timeout"
        elif isinstance(exc, asyncio.CancelledError):
            outcome = "cancelled"
        else:
            outcome = "error"
        self._report("lock.acquire", outcome, clock)

    def _report_release(self, lost: LeaseLostError | None, ok: bool) -> None:
        if lost is None and not ok:  # found lost only now (a loss seen earlier was reported)
            self._report("lock.lost", "lost", None)
        self._report("lock.hold", "released" if ok and lost is None else "lost", self._held_since)
        self._held_since = None

    def _granted(self, claim: Claim, sent: float) -> int:
        if self.observer is not None:
            self._held_since = Stopwatch()
        self._token = claim.token
        self._slot = claim.slot
        self._lost = None
        self._set_valid(sent, self.lease_ms)
        self.lost_event = self._new_event()
        return claim.token

    def _set_valid(self, sent: float, lease_ms: int) -> None:
        lease_s = lease_ms / 1000
        self._valid_until = sent + lease_s - lease_s * _DRIFT_FACTOR - _DRIFT_S

    def _timed_out(self, timeout: float | None) -> LockTimeoutError:
        self._owner = None  # nothing was granted to it: the next acquire starts afresh
        waited = "at once" if timeout is None else f"within {timeout} s"
        return LockTimeoutError(f"{self._what} {self.name!r} was not acquired {waited}")

    def _wait_for(self, claim: Claim, deadline: float | None) -> float:
        wait = min(claim.retry_after_ms / 1000, self.poll_interval)
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
        return max(wait, 0.0)

    def _renewal_answered(self, token: int, sent: float, ok: bool) -> bool:
        """Apply a watchdog renewal's answer; False when the watchdog must stop."""
        if self._token != token or self._lost is not None:
            return False
        # A renewal confirmed after the local lease ran out still holds: Redis renews only the
        # newest token, so nobody else was granted the lock in between.
        if not ok:
            self._mark_lost(
                f"{self._what} {self.name!r} was lost (token {token}): the watchdog could "
                "not renew the lease in time"
            )
            return False
        self._set_valid(sent, self.lease_ms)
        return True

    def _give_back_dead(self, key: str, token: int) -> None:
        raise NotImplementedError

    def _stop_watchdog(self) -> None:
        raise NotImplementedError

    def _mark_lost(self, reason: str) -> LeaseLostError:
        error = LeaseLostError(reason, token=self._token)
        if self._lost is None:
            self._lost = error
            log.warning("idemkit: %s", reason, extra={"idemkit": "lock-lost"})
            self._report("lock.lost", "lost", None)
            self.lost_event.set()
            if self.on_lost is not None:
                try:
                    self.on_lost(error)
                except Exception:
                    log.exception("idemkit: on_lost callback failed")
        return error

    def _cleared(self) -> tuple[int, str, LeaseLostError | None]:
        assert self._token is not None
        state = (self._token, self.keys[self._slot], self._lost)
        self._token = None
        self._owner = None
        self._valid_until = 0.0
        return state

    def _lost_on_release(self, token: int) -> LeaseLostError:
        return LeaseLostError(
            f"{self._what} {self.name!r} was lost before release (token {token}): the lease "
            "expired and a newer token may have been granted; writes fenced with this token "
            "may have been refused",
            token=token,
        )


class FencedLock(_Handle[LeaseStore, asyncio.Event]):
    """An asyncio lock on Redis that hands out a fencing token with every grant.

    ``async with FencedLock(redis, "orders") as token:`` acquires (one round trip), and
    releases on exit (one round trip). ``watchdog=True`` renews the lease every third of it
    while held; a failed renewal sets :attr:`lost_event`, calls ``on_lost`` and makes
    :attr:`token` raise :class:`LeaseLostError`.

    ``replicas=n`` makes every grant and extension wait (``WAIT``, ``replica_timeout_ms``)
    until ``n`` replicas have it, so a failover cannot hand the lock to a second holder; a
    grant too few replicas confirmed is retried until the acquire's timeout, then raises
    :class:`~idemkit.errors.ReplicationTimeoutError` (see :mod:`idemkit.replication`).
    """

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        name: str,
        *,
        lease_ms: int = 30_000,
        retention_ms: int = DEFAULT_RETENTION_MS,
        watchdog: bool = False,
        on_lost: LostCallback | None = None,
        poll_interval: float = 1.0,
        prefix: str | None = None,
        time_floor: bool = True,
        observer: Observer | None = None,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        replica_aof: bool = False,
        _slots: int = 1,
    ) -> None:
        store = LeaseStore(
            client,
            prefix=prefix or self._default_prefix,
            time_floor=time_floor,
            replicas=replicas,
            replica_timeout_ms=replica_timeout_ms,
            replica_aof=replica_aof,
        )
        super().__init__(
            store,
            name,
            slots=_slots,
            lease_ms=lease_ms,
            retention_ms=retention_ms,
            watchdog=watchdog,
            on_lost=on_lost,
            poll_interval=poll_interval,
            observer=observer,
        )
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def _new_event(self) -> asyncio.Event:
        return asyncio.Event()

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            raise LockUsageError(
                f"{self._what} {self.name!r} was first used on another event loop; a handle "
                "and its redis.asyncio client belong to one loop: create one handle per loop"
            )

    # A timeout parameter (not asyncio.timeout) because it also bounds each server-side BLPOP
    # and matches the sync twin and threading.Lock.acquire.
    async def acquire(self, timeout: float | None = None, blocking: bool = True) -> int:  # noqa: ASYNC109
        """Wait for the lock and return its fencing token.

        ``timeout`` bounds the wait in seconds (``None``: no bound); ``blocking=False`` tries
        once. Raises :class:`LockTimeoutError` when the lock stays busy.

        Safe under cancellation: a claim already sent when the acquire is cancelled is
        awaited in a shielded task and, if Redis granted it, released at once (a claim whose
        reply was lost is re-claimed, which is idempotent for its owner id, and released);
        a wake-up taken by a cancelled waiter is pushed back for the next one.
        """
        if self.observer is None:
            return await self._acquire(timeout, blocking)
        clock = Stopwatch()
        try:
            token = await self._acquire(timeout, blocking)
        except BaseException as exc:
            self._report_acquire(clock, exc)
            raise
        self._report_acquire(clock, None)
        return token

    async def _acquire(self, timeout: float | None, blocking: bool) -> int:  # noqa: ASYNC109
        self._check_loop()
        deadline = _deadline(timeout, blocking)
        owner = self._begin_acquire()
        loop = asyncio.get_running_loop()
        pending: asyncio.Task[Claim] | None = None
        unanswered = False  # a claim went out and no reply came: it may have been granted
        try:
            while True:
                sent = time.monotonic()
                pending = loop.create_task(
                    self._store.claim_owned(self.keys, owner, self.lease_ms, self.retention_ms)
                )
                try:
                    claim = await asyncio.shield(pending)
                except StoreUnavailableError:
                    pending, unanswered = None, True
                    if deadline is None or time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                    continue
                pending, unanswered = None, False
                if claim.outcome == CLAIMED:
                    token = self._granted(claim, sent)
                    if self.watchdog:
                        self._watchdog = loop.create_task(_watch(weakref.ref(self), token))
                    return token
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out(timeout if blocking else None)
                await self._wait(self._wait_for(claim, deadline))
        except asyncio.CancelledError:
            self._owner = None  # the cleanup keeps its own copy; a new acquire starts afresh
            if pending is not None:
                self._track(pending)
                pending.add_done_callback(functools.partial(self._claim_settled, owner))
            elif unanswered:
                self._spawn(self._give_back(owner, None))
            raise

    def _claim_settled(self, owner: str, task: asyncio.Task[Claim]) -> None:
        """The claim of a cancelled acquire has its answer: give back what it was granted."""
        if task.cancelled() or task.exception() is not None:
            self._spawn(self._give_back(owner, None))
        elif task.result().outcome == CLAIMED:
            self._spawn(self._give_back(owner, task.result()))

    async def _give_back(self, owner: str, claim: Claim | None) -> None:
        """Release the grant of an acquire nobody waits for any more (``claim``), or, when its
        outcome is unknown, re-claim with the same owner id (which returns that grant if it
        exists) and release. Bounded: past the lease, an unreleased grant has lapsed anyway."""
        give_up = time.monotonic() + self.lease_ms / 1000
        for attempt in range(5):
            try:
                if claim is None:
                    claim = await self._store.claim_owned(
                        self.keys, owner, self.lease_ms, self.retention_ms
                    )
                    if claim.outcome != CLAIMED:
                        return  # busy: this owner holds nothing
                await self._store.release_and_signal(
                    self.keys[claim.slot], claim.token, self.signal_key, signal_cap=self._slots
                )
                return
            except StoreUnavailableError as exc:
                if time.monotonic() >= give_up:
                    break
                log.debug("idemkit: releasing a cancelled acquire failed, will retry: %s", exc)
                await asyncio.sleep(0.05 * 2**attempt)
        log.warning(
            "idemkit: could not release the grant of a cancelled acquire of %s %r; it lapses "
            "when its lease ends",
            self._what,
            self.name,
        )

    async def _wait(self, seconds: float) -> None:
        if seconds < _MIN_BLOCK_S:
            await asyncio.sleep(seconds)
            return
        blpop = asyncio.get_running_loop().create_task(self._blpop(seconds))
        try:
            await asyncio.shield(blpop)
        except asyncio.CancelledError:
            # Redis may already have handed this waiter a release's wake-up whose reply is on
            # its way; cancelling the read would lose it and the next waiter would sleep.
            self._track(blpop)
            blpop.add_done_callback(self._hand_on)
            raise
        except (RedisError, OSError) as exc:
            # The claim that follows reports the outage if it persists.
            log.debug("idemkit: wake-up wait failed: %s", exc)
            await asyncio.sleep(min(seconds, 0.05))

    async def _blpop(self, seconds: float) -> Any:
        return await self.client.blpop([self.signal_key], timeout=seconds)

    def _hand_on(self, blpop: asyncio.Task[Any]) -> None:
        if not blpop.cancelled() and blpop.exception() is None and blpop.result() is not None:
            self._spawn(self._push_wake_up())

    async def _push_wake_up(self) -> None:
        """Put back a wake-up a cancelled waiter took (one round trip), so another waiter gets
        it; the list stays capped and expiring as a release leaves it."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lpush(self.signal_key, "1")
        pipe.ltrim(self.signal_key, 0, self._slots - 1)
        pipe.pexpire(self.signal_key, _SIGNAL_MS)
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("idemkit: could not hand a wake-up on: %s", exc)

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._track(asyncio.get_running_loop().create_task(coro))

    async def release(self) -> None:
        """Give the lock back (one round trip) and wake one waiter.

        Raises :class:`LockNotHeldError` if this handle holds nothing and
        :class:`LeaseLostError` if the lease had been lost. Safe under cancellation: the
        release runs to completion even if the awaiting task is cancelled.
        """
        self._check_loop()
        if self._token is None:
            raise LockNotHeldError(
                f"{self._what} {self.name!r} is not held by this handle: nothing to release"
            )
        self._stop_watchdog()
        task = asyncio.get_running_loop().create_task(self._release_now())
        self._track(task)
        await asyncio.shield(task)

    async def _release_now(self) -> None:
        assert self._token is not None
        ok = await self._store.release_and_signal(
            self.keys[self._slot],
            self._token,
            self.signal_key,
            signal_ms=_SIGNAL_MS,
            signal_cap=self._slots,
        )
        # Clear only after a definitive reply: on a connection error the handle still
        # holds its token and the caller may retry the release.
        token, _, lost = self._cleared()
        self._report_release(lost, bool(ok))
        if lost is not None or not ok:
            raise self._lost_on_release(token)

    async def extend(self, lease_ms: int | None = None) -> None:
        """Restart the lease at ``lease_ms`` (default: the lock's) from now; one round trip."""
        self._check_loop()
        lease = self.lease_ms if lease_ms is None else _check_ms(lease_ms, "lease_ms")
        if self._lost is not None:
            self.ensure_held()
        if self._token is None:
            raise LockNotHeldError(
                f"{self._what} {self.name!r} is not held by this handle: nothing to extend"
            )
        sent = time.monotonic()
        if not await self._store.renew(self.keys[self._slot], self._token, lease):
            raise self._mark_lost(
                f"{self._what} {self.name!r} was lost (token {self._token}): a newer token was "
                "granted or the record is gone"
            )
        self._set_valid(sent, lease)

    async def _renew_once(self, token: int) -> bool:
        """One watchdog renewal; False when the watchdog must stop."""
        if self._token != token or self._lost is not None:
            return False
        sent = time.monotonic()
        try:
            ok = await self._store.renew(self.keys[self._slot], token, self.lease_ms)
        except StoreUnavailableError as exc:
            if time.monotonic() < self._valid_until:
                log.warning("idemkit: lock renewal failed, will retry: %s", exc)
                return True
            ok = False
        return self._renewal_answered(token, sent, ok)

    def _give_back_dead(self, key: str, token: int) -> None:
        self._spawn(self._release_quietly(key, token))

    async def _release_quietly(self, key: str, token: int) -> None:
        with contextlib.suppress(StoreUnavailableError):  # the lease ends on its own
            await self._store.release_and_signal(
                key, token, self.signal_key, signal_cap=self._slots
            )

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    async def check_server(self) -> str | None:
        """Check that Redis will not evict lock records; log and return a warning if it may.

        One ``CONFIG GET``; returns None when CONFIG is not allowed (managed Redis).
        """
        try:
            config = await self.client.config_get("maxmemory-policy", **config_targets(self.client))
        except (RedisError, OSError):
            return None
        warning = eviction_warning(dict(config_reply(config)))
        if warning:
            log.warning("idemkit: %s", warning)
        return warning

    async def __aenter__(self) -> int:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.release()
        except LeaseLostError:
            if exc is None:
                raise
            # The body's own error is the one to see; the loss is logged by then.
            log.warning("idemkit: %s %r was lost while the block raised", self._what, self.name)


class SyncFencedLock(_Handle[SyncLeaseStore, threading.Event]):
    """The blocking twin of :class:`FencedLock`, on the sync ``redis`` client.

    The watchdog is a daemon thread; ``on_lost`` runs on it.
    """

    def __init__(
        self,
        client: redis.Redis | redis.RedisCluster,
        name: str,
        *,
        lease_ms: int = 30_000,
        retention_ms: int = DEFAULT_RETENTION_MS,
        watchdog: bool = False,
        on_lost: LostCallback | None = None,
        poll_interval: float = 1.0,
        prefix: str | None = None,
        time_floor: bool = True,
        observer: Observer | None = None,
        replicas: int = 0,
        replica_timeout_ms: int = 100,
        replica_aof: bool = False,
        _slots: int = 1,
    ) -> None:
        store = SyncLeaseStore(
            client,
            prefix=prefix or self._default_prefix,
            time_floor=time_floor,
            replicas=replicas,
            replica_timeout_ms=replica_timeout_ms,
            replica_aof=replica_aof,
        )
        super().__init__(
            store,
            name,
            slots=_slots,
            lease_ms=lease_ms,
            retention_ms=retention_ms,
            watchdog=watchdog,
            on_lost=on_lost,
            poll_interval=poll_interval,
            observer=observer,
        )
        self.client = client
        self._watchdog: threading.Thread | None = None
        self._stop = threading.Event()

    def _new_event(self) -> threading.Event:
        return threading.Event()

    def acquire(self, timeout: float | None = None, blocking: bool = True) -> int:
        """Wait for the lock and return its fencing token (see :meth:`FencedLock.acquire`)."""
        if self.observer is None:
            return self._acquire(timeout, blocking)
        clock = Stopwatch()
        try:
            token = self._acquire(timeout, blocking)
        except BaseException as exc:
            self._report_acquire(clock, exc)
            raise
        self._report_acquire(clock, None)
        return token

    def _acquire(self, timeout: float | None, blocking: bool) -> int:
        deadline = _deadline(timeout, blocking)
        owner = self._begin_acquire()
        while True:
            sent = time.monotonic()
            try:
                claim = self._store.claim_owned(self.keys, owner, self.lease_ms, self.retention_ms)
            except StoreUnavailableError:
                if deadline is None or time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            if claim.outcome == CLAIMED:
                token = self._granted(claim, sent)
                if self.watchdog:
                    self._start_watchdog(token)
                return token
            if deadline is not None and time.monotonic() >= deadline:
                raise self._timed_out(timeout if blocking else None)
            self._wait(self._wait_for(claim, deadline))

    def _wait(self, seconds: float) -> None:
        if seconds < _MIN_BLOCK_S:
            time.sleep(seconds)
            return
        try:
            self.client.blpop([self.signal_key], timeout=seconds)
        except (RedisError, OSError) as exc:
            log.debug("idemkit: wake-up wait failed: %s", exc)
            time.sleep(min(seconds, 0.05))

    def release(self) -> None:
        """Give the lock back and wake one waiter; see :meth:`FencedLock.release`."""
        if self._token is None:
            raise LockNotHeldError(
                f"{self._what} {self.name!r} is not held by this handle: nothing to release"
            )
        self._stop_watchdog()
        ok = self._store.release_and_signal(
            self.keys[self._slot], self._token, self.signal_key, signal_cap=self._slots
        )
        token, _, lost = self._cleared()
        self._report_release(lost, bool(ok))
        if lost is not None or not ok:
            raise self._lost_on_release(token)

    def extend(self, lease_ms: int | None = None) -> None:
        """Restart the lease at ``lease_ms`` from now; one round trip."""
        lease = self.lease_ms if lease_ms is None else _check_ms(lease_ms, "lease_ms")
        if self._lost is not None:
            self.ensure_held()
        if self._token is None:
            raise LockNotHeldError(
                f"{self._what} {self.name!r} is not held by this handle: nothing to extend"
            )
        sent = time.monotonic()
        if not self._store.renew(self.keys[self._slot], self._token, lease):
            raise self._mark_lost(
                f"{self._what} {self.name!r} was lost (token {self._token}): a newer token was "
                "granted or the record is gone"
            )
        self._set_valid(sent, lease)

    def _start_watchdog(self, token: int) -> None:
        self._stop = threading.Event()
        self._watchdog = threading.Thread(
            target=_watch_sync,
            args=(weakref.ref(self), token, self._stop, self.lease_ms / 3000),
            name=f"idemkit-lock-watchdog:{self.name}",
            daemon=True,
        )
        self._watchdog.start()

    def _renew_once(self, token: int, stop: threading.Event) -> bool:
        """One watchdog renewal; False when the watchdog must stop."""
        sent = time.monotonic()
        try:
            ok = self._store.renew(self.keys[self._slot], token, self.lease_ms)
        except StoreUnavailableError as exc:
            if time.monotonic() < self._valid_until:
                log.warning("idemkit: lock renewal failed, will retry: %s", exc)
                return True
            ok = False
        if stop.is_set():
            return False
        return self._renewal_answered(token, sent, ok)

    def _give_back_dead(self, key: str, token: int) -> None:
        with contextlib.suppress(StoreUnavailableError):  # the lease ends on its own
            self._store.release_and_signal(key, token, self.signal_key, signal_cap=self._slots)

    def _stop_watchdog(self) -> None:
        self._stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=5)
        self._watchdog = None

    def check_server(self) -> str | None:
        """See :meth:`FencedLock.check_server`."""
        try:
            config = self.client.config_get("maxmemory-policy", **config_targets(self.client))
        except (RedisError, OSError):
            return None
        warning = eviction_warning(dict(config_reply(config)))
        if warning:
            log.warning("idemkit: %s", warning)
        return warning

    def __enter__(self) -> int:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except LeaseLostError:
            if exc is None:
                raise
            log.warning("idemkit: %s %r was lost while the block raised", self._what, self.name)


async def _watch(ref: weakref.ref[FencedLock], token: int) -> None:
    """Renew a held lock every third of its lease. Holds its handle only while renewing, so a
    handle dropped without ``release()`` stops being renewed and its lease runs out."""
    handle = ref()
    if handle is None:
        return
    interval = handle.lease_ms / 3000
    del handle
    while True:
        await asyncio.sleep(interval)
        handle = ref()
        if handle is None or not await handle._renew_once(token):
            return
        del handle


def _watch_sync(
    ref: weakref.ref[SyncFencedLock], token: int, stop: threading.Event, interval: float
) -> None:
    """The blocking twin of :func:`_watch`, on a daemon thread."""
    while not stop.wait(interval):
        handle = ref()
        if handle is None or not handle._renew_once(token, stop):
            return
        del handle
