"""A circuit breaker: stop calling a service that keeps failing, try again after a cool-down.

Three states::

    CLOSED --(failure_threshold failures in a row)--> OPEN
    OPEN --(cooldown seconds later, on the next call or state read)--> HALF_OPEN
    HALF_OPEN --(a trial call succeeds)--> CLOSED
    HALF_OPEN --(a trial call fails)--> OPEN (a new cool-down)

While OPEN no call is made: :meth:`CircuitBreaker.before_call` raises
:class:`CircuitOpenError`, whose ``retry_after`` says when the next trial may go. HALF_OPEN
admits ``half_open_calls`` trial calls at a time. Every transition is reported as an
:class:`idemkit.observe.Event` named ``"circuit.state"`` (outcome: the new state, ``route``:
the breaker's name, ``attrs``: the previous state and the failure count), and :attr:`state`
can be read at any time. Thread-safe; no I/O, so usable from sync and async code alike.

One breaker per service (not per request): share it between the clients that call it. The
retrying clients (:mod:`integrations.httpx_client`, :mod:`integrations.requests_client`)
take ``breaker=``; they count transport errors and 500/502/503/504 answers as failures (a
replayed stored answer is a success: the service answered), everything else as success.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

from idemkit.errors import ConfigurationError, IdemkitError
from idemkit.observe import Event, Observer, emit

__all__ = ["DEFAULT_FAILURE_STATUSES", "BreakerState", "CircuitBreaker", "CircuitOpenError"]

DEFAULT_FAILURE_STATUSES: Final = frozenset({500, 502, 503, 504})


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(IdemkitError):
    """The circuit is open: the call was not made. Try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CircuitBreaker:
    """``breaker = CircuitBreaker(name="shop")``, then pass it to a client as ``breaker=``."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown: float = 30.0,
        half_open_calls: int = 1,
        failure_statuses: Iterable[int] = DEFAULT_FAILURE_STATUSES,
        name: str = "default",
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(failure_threshold, bool) or not isinstance(failure_threshold, int):
            raise ConfigurationError(f"failure_threshold must be an int, got {failure_threshold!r}")
        if failure_threshold < 1 or half_open_calls < 1:
            raise ConfigurationError("failure_threshold and half_open_calls must be at least 1")
        if not cooldown > 0:
            raise ConfigurationError(f"cooldown must be > 0 seconds, got {cooldown!r}")
        self.failure_threshold = failure_threshold
        self.cooldown = float(cooldown)
        self.half_open_calls = half_open_calls
        self.failure_statuses = frozenset(failure_statuses)
        self.name = name
        self.observer = observer
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0  # in a row, while closed
        self._opened_at = 0.0
        self._trials = 0  # trial calls in flight, while half-open

    # -- reading ------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an open circuit whose cool-down is over reads as half-open)."""
        with self._lock:
            changes = self._tick()
            state = self._state
        self._report(changes)
        return state

    @property
    def failures(self) -> int:
        """Failures in a row counted while closed."""
        return self._failures

    def is_failure(self, status: int) -> bool:
        """Whether an HTTP status counts as a failure of the service."""
        return status in self.failure_statuses

    # -- the protocol: before_call, then exactly one of record_success/failure/ignored ------

    def before_call(self) -> None:
        """Admit a call, or raise :class:`CircuitOpenError` without making it."""
        with self._lock:
            changes = self._tick()
            refused: CircuitOpenError | None = None
            if self._state is BreakerState.OPEN:
                wait = self._opened_at + self.cooldown - self._clock()
                refused = CircuitOpenError(
                    f"circuit {self.name!r} is open after {self.failure_threshold} failures in "
                    f"a row; the next trial call goes in {wait:.2f} s",
                    retry_after=wait,
                )
            elif self._state is BreakerState.HALF_OPEN:
                if self._trials >= self.half_open_calls:
                    refused = CircuitOpenError(
                        f"circuit {self.name!r} is half-open and its trial call is in flight",
                        retry_after=0.0,
                    )
                else:
                    self._trials += 1
        self._report(changes)
        if refused is not None:
            raise refused

    def record_success(self) -> None:
        with self._lock:
            changes: list[tuple[BreakerState, BreakerState]] = []
            if self._state is BreakerState.HALF_OPEN:
                self._trials = max(0, self._trials - 1)
                changes.append(self._move(BreakerState.CLOSED))
            elif self._state is BreakerState.CLOSED:
                self._failures = 0
            # OPEN: a call admitted before the circuit opened came back late; it proves little.
        self._report(changes)

    def record_failure(self) -> None:
        with self._lock:
            changes: list[tuple[BreakerState, BreakerState]] = []
            if self._state is BreakerState.HALF_OPEN:
                self._trials = max(0, self._trials - 1)
                changes.append(self._move(BreakerState.OPEN))
            elif self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    changes.append(self._move(BreakerState.OPEN))
            # OPEN: already open; a late failure does not extend the cool-down.
        self._report(changes)

    def record_ignored(self) -> None:
        """The admitted call ended without a verdict (cancelled, a bug on the caller's side):
        free its half-open trial slot without judging the service."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._trials = max(0, self._trials - 1)

    # -- internals (under the lock) -----------------------------------------------------------

    def _tick(self) -> list[tuple[BreakerState, BreakerState]]:
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self.cooldown:
            return [self._move(BreakerState.HALF_OPEN)]
        return []

    def _move(self, new: BreakerState) -> tuple[BreakerState, BreakerState]:
        old, self._state = self._state, new
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        if new is BreakerState.CLOSED:
            self._failures = 0
        if new is BreakerState.HALF_OPEN:
            self._trials = 0
        return old, new

    def _report(self, changes: list[tuple[BreakerState, BreakerState]]) -> None:
        # Outside the lock: an observer may read the breaker.
        for old, new in changes:
            emit(
                self.observer,
                Event(
                    "circuit.state",
                    new.value,
                    route=self.name,
                    attrs={"previous": old.value, "failures": self._failures},
                ),
            )
