"""Orchestrated sagas: local steps, each with a compensation, driven from a persisted log.

A saga is a list of :class:`Step` s. The orchestrator runs the actions in order; when one
fails for good it runs the compensations of the completed steps in reverse order. Between
every two moves it writes where it is to the saga log (:mod:`idemkit.patterns.saga_log`).

* **One orchestrator per saga.** Driving a saga takes a :class:`~idemkit.lock.FencedLock`
  named after it (renewed by a watchdog); the lock's token fences every log write, so an
  orchestrator paused past its lease cannot move the saga once another has taken over.
* **Crash recovery.** A saga whose orchestrator died stays in the log's "unfinished" index;
  :meth:`SagaOrchestrator.recover` (any process, any time) takes its lease once it has
  lapsed and resumes it from the log: the interrupted action or compensation is called
  again.
* **Exactly-once steps.** That second call carries the same :attr:`StepContext.idempotency_key`
  (derived from the saga, the saga id, the step and whether it is the action or the
  compensation), so a step that calls a service behind idemkit's middleware, or through
  :class:`~integrations.httpx_client.IdempotentTransport`, with ``headers=ctx.headers``
  gets the stored response instead of a second execution.
* **Failures.** An action raising :class:`~idemkit.patterns.StepFailed` failed for good:
  it is not retried or compensated. Any other exception is retried (``action_attempts``);
  if it persists, the action's outcome is unknown and it is compensated too, so
  compensations must accept "nothing to undo". A compensation is retried
  (``compensation_attempts``); one that keeps failing *parks* the saga: status ``parked``,
  listed by :meth:`SagaOrchestrator.parked`, reported to the observer and the log, kept
  without expiry, resumed by :meth:`SagaOrchestrator.retry_parked`. Never dropped.

Final states: ``completed``, ``compensated``, and ``parked`` (waiting for a person).
Events: ``saga.action``, ``saga.compensation`` (outcome ``ok``, ``failed``, ``retry``),
``saga.finished`` (outcome = final status), ``saga.parked``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import redis.asyncio as aioredis

from idemkit.errors import (
    LeaseLostError,
    LockNotHeldError,
    LockTimeoutError,
    StaleTokenError,
    StoreUnavailableError,
)
from idemkit.lock import FencedLock, check_name
from idemkit.observe import Event, Observer, Stopwatch, emit
from idemkit.patterns.errors import (
    SagaBusyError,
    SagaConflictError,
    SagaDefinitionError,
    StepFailed,
)
from idemkit.patterns.saga_log import FINISHED, RedisSagaLog, SagaLog, SagaRecord, SagaStatus

__all__ = [
    "Saga",
    "SagaOrchestrator",
    "SagaOutcome",
    "Step",
    "StepContext",
    "idempotency_key",
]

log = logging.getLogger("idemkit.patterns.saga")

StepKind = Literal["action", "compensation"]
_MAX_KEY: Final = 200


def idempotency_key(saga: str, saga_id: str, step: str, kind: StepKind) -> str:
    """The key every call of one step's action (or compensation) carries, on every retry and
    from every orchestrator: the same inputs always give the same key."""
    raw = f"saga:{saga}:{saga_id}:{step}:{kind}"
    if len(raw) <= _MAX_KEY and raw.isascii() and raw.isprintable() and " " not in raw:
        return raw
    return "saga:" + hashlib.blake2b(raw.encode(), digest_size=20).hexdigest()


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step function gets: who it is, the saga input and earlier results."""

    saga: str
    saga_id: str
    step: str
    kind: StepKind
    data: Any
    results: Mapping[str, Any]
    token: int
    attempt: int
    idempotency_key: str

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers for the step's call: the idempotency key (and the fencing token)."""
        return {"Idempotency-Key": self.idempotency_key, "Fencing-Token": str(self.token)}


StepFunction = Callable[[StepContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Step:
    """An action and the compensation that undoes it (None: nothing to undo)."""

    name: str
    action: StepFunction
    compensation: StepFunction | None = None


class Saga:
    """A named, ordered list of steps::

    order = Saga("place-order")
    order.add("reserve", reserve_stock, compensation=release_stock)
    order.add("charge", charge_card, compensation=refund_card)
    order.add("confirm", confirm_order)
    """

    def __init__(self, name: str, steps: Iterable[Step] = ()) -> None:
        self.name = check_name(name, "saga")
        self.steps: list[Step] = []
        for step in steps:
            self._append(step)

    def _append(self, step: Step) -> None:
        if any(s.name == step.name for s in self.steps):
            raise SagaDefinitionError(f"saga {self.name!r} already has a step {step.name!r}")
        if not step.name:
            raise SagaDefinitionError("a step needs a non-empty name")
        self.steps.append(step)

    def add(
        self, name: str, action: StepFunction, *, compensation: StepFunction | None = None
    ) -> Saga:
        """Append a step; returns the saga, so calls chain."""
        self._append(Step(name, action, compensation))
        return self

    def step(
        self, name: str, *, compensation: StepFunction | None = None
    ) -> Callable[[StepFunction], StepFunction]:
        """Decorator form of :meth:`add`."""

        def register(action: StepFunction) -> StepFunction:
            self.add(name, action, compensation=compensation)
            return action

        return register


@dataclass(frozen=True, slots=True)
class SagaOutcome:
    """Where a saga ended (or stands, for :meth:`SagaOrchestrator.status`)."""

    saga_id: str
    name: str
    status: SagaStatus
    results: dict[str, Any] = field(default_factory=dict)
    failed_step: str | None = None
    error: str | None = None
    parked_step: str | None = None

    @classmethod
    def of(cls, record: SagaRecord) -> SagaOutcome:
        return cls(
            record.saga_id,
            record.name,
            record.status,
            dict(record.results),
            record.failed_step,
            record.error,
            record.parked_step,
        )


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class SagaOrchestrator:
    """Runs, resumes and recovers the sagas it knows (by name); see the module docstring."""

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        sagas: Iterable[Saga],
        *,
        saga_log: SagaLog | None = None,
        lease_ms: int = 10_000,
        action_attempts: int = 3,
        compensation_attempts: int = 5,
        retry_backoff: float = 0.05,
        observer: Observer | None = None,
    ) -> None:
        self.client = client
        self.sagas: dict[str, Saga] = {}
        for saga in sagas:
            if not saga.steps:
                raise SagaDefinitionError(f"saga {saga.name!r} has no steps")
            self.sagas[saga.name] = saga
        if action_attempts < 1 or compensation_attempts < 1:
            raise SagaDefinitionError("action_attempts and compensation_attempts must be >= 1")
        self.log = saga_log or RedisSagaLog(client)
        self.lease_ms = lease_ms
        self.action_attempts = action_attempts
        self.compensation_attempts = compensation_attempts
        self.retry_backoff = retry_backoff
        self.observer = observer

    def _saga(self, name: str) -> Saga:
        try:
            return self.sagas[name]
        except KeyError:
            raise SagaDefinitionError(
                f"no saga named {name!r} is registered with this orchestrator"
            ) from None

    # -- public entry points ------------------------------------------------------------------

    async def run(
        self, saga: Saga | str, saga_id: str, data: Any = None, *, wait: float = 0.0
    ) -> SagaOutcome:
        """Start saga ``saga_id`` with ``data`` (or resume it, if it exists and is unfinished)
        and drive it to a final state. Idempotent: a finished saga returns its outcome.

        Raises :class:`SagaConflictError` if the id was used with other data,
        :class:`SagaBusyError` if another orchestrator holds it for longer than ``wait``
        seconds, and :class:`LeaseLostError` if this one lost it midway.
        """
        definition = self._saga(saga if isinstance(saga, str) else saga.name)
        check_name(saga_id, "saga id")
        outcome = await self._drive(saga_id, definition, data, wait=wait, start=True)
        assert outcome is not None  # a started saga always has a record
        return outcome

    async def start(
        self, saga: Saga | str, saga_id: str, data: Any = None, *, wait: float = 0.0
    ) -> SagaOutcome:
        """Log saga ``saga_id`` with ``data`` and leave it unfinished, without running a step:
        :meth:`recover` (or :meth:`resume`) in any orchestrator process drives it. For a
        service that answers "accepted" and lets orchestrator processes do the work.

        Idempotent like :meth:`run`: an existing saga with the same input returns where it
        stands; other input raises :class:`SagaConflictError`. Raises
        :class:`SagaBusyError` when another process holds the saga's lease for longer than
        ``wait`` seconds before it was ever logged (a concurrent start).
        """
        definition = self._saga(saga if isinstance(saga, str) else saga.name)
        check_name(saga_id, "saga id")
        existing = await self.log.peek(saga_id)
        if existing is not None:
            # No lease needed to read it: a logged saga's name and input never change.
            self._check_same(existing, definition, data)
            return SagaOutcome.of(existing)
        outcome = await self._drive(saga_id, definition, data, wait=wait, start=True, drive=False)
        assert outcome is not None  # a started saga always has a record
        return outcome

    async def resume(self, saga_id: str, *, wait: float = 0.0) -> SagaOutcome | None:
        """Drive an existing saga on from its log; None if there is no such saga."""
        return await self._drive(saga_id, None, None, wait=wait, start=False)

    async def recover(self, *, limit: int = 100) -> list[SagaOutcome]:
        """Resume unfinished sagas whose orchestrator is gone (lease free); skip busy ones."""
        outcomes = []
        for saga_id in await self.log.unfinished(limit):
            try:
                outcome = await self.resume(saga_id)
            except SagaBusyError:
                continue  # its orchestrator is alive
            except SagaDefinitionError as exc:
                log.warning("idemkit: cannot recover saga: %s", exc)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    async def retry_parked(self, saga_id: str) -> SagaOutcome | None:
        """Compensate a parked saga again, from the compensation that kept failing."""
        return await self._drive(saga_id, None, None, wait=0.0, start=False, unpark=True)

    async def parked(self, limit: int = 1000) -> list[SagaOutcome]:
        """Sagas waiting for a person: a compensation kept failing."""
        out = []
        for saga_id in await self.log.parked(limit):
            record = await self.log.peek(saga_id)
            if record is not None and record.status == "parked":
                out.append(SagaOutcome.of(record))
        return out

    async def status(self, saga_id: str) -> SagaOutcome | None:
        """The saga's state as logged (no lease taken)."""
        record = await self.log.peek(saga_id)
        return None if record is None else SagaOutcome.of(record)

    async def run_forever(self, stop: asyncio.Event, *, interval: float = 1.0) -> None:
        """Recover unfinished sagas every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.recover()
            except Exception:
                log.exception("idemkit: saga recovery pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    # -- driving ------------------------------------------------------------------------------

    async def _drive(
        self,
        saga_id: str,
        definition: Saga | None,
        data: Any,
        *,
        wait: float,
        start: bool,
        unpark: bool = False,
        drive: bool = True,
    ) -> SagaOutcome | None:
        if not start:
            existing = await self.log.peek(saga_id)
            # No record: unknown, or indexed by a starter that died before logging it. The
            # latter must leave the unfinished index (below, under the lease), or recovery
            # would retry it forever.
            if existing is not None and (
                existing.status in FINISHED or (existing.status == "parked" and not unpark)
            ):
                return SagaOutcome.of(existing)
        lock = FencedLock(self.client, f"saga:{saga_id}", lease_ms=self.lease_ms, watchdog=True)
        try:
            token = await lock.acquire(timeout=wait) if wait else await lock.acquire(blocking=False)
        except LockTimeoutError:
            raise SagaBusyError(
                f"saga {saga_id!r} is being driven by another orchestrator",
                retry_after=self.lease_ms / 1000,
            ) from None
        try:
            record = await self.log.load(saga_id, token)
            if record is None:
                if definition is None:  # tracked, then its starter died before logging it
                    await self.log.settle(SagaRecord(saga_id, "", None, "completed"))
                    return None
                # Indexed before the record exists, so a crash in between is never lost.
                await self.log.track(saga_id)
                record = SagaRecord(saga_id, definition.name, data)
                await self.log.save(record, token)
            elif definition is not None:
                self._check_same(record, definition, data)
            if not drive:
                return SagaOutcome.of(record)
            if unpark and record.status == "parked":
                record = record.but(status="compensating", parked_step=None)
                await self.log.save(record, token)
            record = await self._advance(self._saga(record.name), record, lock)
            await self.log.settle(record)
            return SagaOutcome.of(record)
        except StaleTokenError as exc:
            raise LeaseLostError(
                f"saga {saga_id!r} was taken over by another orchestrator (token "
                f"{exc.newest} is newer than {exc.token}); it drives the saga now",
                token=exc.token,
            ) from exc
        finally:
            # Always, not only while held: a lease that ran out locally (renewals failing in
            # an outage) is neither held nor lost, yet its watchdog renews it again once Redis
            # answers, and would keep a saga nobody drives from every other orchestrator.
            with contextlib.suppress(LeaseLostError, LockNotHeldError, StoreUnavailableError):
                await lock.release()

    @staticmethod
    def _check_same(record: SagaRecord, definition: Saga, data: Any) -> None:
        if record.name != definition.name or _canonical(record.data) != _canonical(data):
            raise SagaConflictError(
                f"saga id {record.saga_id!r} was already started with other input; use a new id"
            )

    async def _call(
        self, saga: Saga, record: SagaRecord, step: Step, kind: StepKind, lock: FencedLock
    ) -> Any:
        function = step.action if kind == "action" else step.compensation
        assert function is not None
        attempts = self.action_attempts if kind == "action" else self.compensation_attempts
        key = idempotency_key(saga.name, record.saga_id, step.name, kind)
        for attempt in range(1, attempts + 1):
            context = StepContext(
                saga.name,
                record.saga_id,
                step.name,
                kind,
                record.data,
                dict(record.results),
                lock.token,  # raises LeaseLostError once the watchdog lost the lease
                attempt,
                key,
            )
            watch = Stopwatch()
            try:
                result = await function(context)
            except StepFailed:
                emit(self.observer, watch.event(f"saga.{kind}", "failed", route=saga.name))
                raise
            except Exception as exc:
                if attempt == attempts:
                    emit(self.observer, watch.event(f"saga.{kind}", "failed", route=saga.name))
                    raise
                emit(self.observer, watch.event(f"saga.{kind}", "retry", route=saga.name))
                log.info("idemkit: saga step %s %s failed, retrying: %r", step.name, kind, exc)
                await asyncio.sleep(self.retry_backoff * 2 ** (attempt - 1))
                continue
            # Fault tests kill the process on this event: the step ran, the log does not
            # know yet; the next orchestrator calls it again with the same key.
            emit(
                self.observer,
                watch.event(f"saga.{kind}", "ok", route=saga.name, attrs={"step": step.name}),
            )
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _advance(self, saga: Saga, record: SagaRecord, lock: FencedLock) -> SagaRecord:
        steps: Sequence[Step] = saga.steps
        while True:
            token = lock.token
            if record.status == "running":
                if record.next >= len(steps):
                    record = record.but(status="completed")
                    await self.log.save(record, token)
                    break
                step = steps[record.next]
                try:
                    result = await self._call(saga, record, step, "action", lock)
                except StepFailed as exc:
                    # Failed for good: this step did nothing, undo the ones before it.
                    record = record.but(
                        status="compensating",
                        next=record.next - 1,
                        failed_step=step.name,
                        error=str(exc) or type(exc).__name__,
                    )
                except LeaseLostError:
                    raise
                except Exception as exc:
                    # Outcome unknown: compensate this step as well.
                    record = record.but(
                        status="compensating",
                        failed_step=step.name,
                        error=repr(exc)[:500],
                    )
                else:
                    record = record.but(
                        next=record.next + 1, results={**record.results, step.name: result}
                    )
                await self.log.save(record, lock.token)
            elif record.status == "compensating":
                if record.next < 0:
                    record = record.but(status="compensated")
                    await self.log.save(record, token)
                    break
                step = steps[record.next]
                if step.compensation is not None:
                    try:
                        await self._call(saga, record, step, "compensation", lock)
                    except LeaseLostError:
                        raise
                    except Exception as exc:
                        record = record.but(
                            status="parked", parked_step=step.name, error=repr(exc)[:500]
                        )
                        await self.log.save(record, lock.token)
                        log.error(
                            "idemkit: saga %s %r parked: compensation of %r keeps failing: %r",
                            saga.name,
                            record.saga_id,
                            step.name,
                            exc,
                        )
                        emit(
                            self.observer,
                            Event(
                                "saga.parked", "parked", route=saga.name, attrs={"step": step.name}
                            ),
                        )
                        break
                record = record.but(next=record.next - 1)
                await self.log.save(record, lock.token)
            else:
                break
        emit(self.observer, Event("saga.finished", record.status, route=saga.name))
        return record
