"""When the retrying clients retry, and how long they wait: one policy for httpx and requests.

A mutating request (POST and PATCH by default) without an ``Idempotency-Key`` gets a fresh
UUID4 key; every retry resends the *same* request, key and body, so a server running the
idempotency middleware replays the stored answer instead of executing twice.

What is retried, and why:

* **transport errors** where the answer may have been lost: connection refused or reset,
  timeouts, a connection closed before the answer. Safe because the key is the same: a
  request that did execute is replayed, not run again.
* **408, 429, 502, 503, 504**: the server (or a gateway in front of it) did not do the work,
  or says so, and asks to come back later. The idempotency middleware releases the key on
  these by default, so the retry may execute.
* **409**: the first request with this key is still in flight (the Idempotency-Key draft's
  answer, with ``Retry-After``); once it finishes, the retry gets its answer.

Never retried: an answer replayed from the store (``Idempotent-Replayed: true``) of any
status, since it is the final answer of that key and asking again returns it again; and
every other status, in particular **500**: the middleware stores a handler's 500 like any
result (the handler ran and its side effects may have happened), so a retry with the same
key only replays it and a retry with a new key could execute twice. A 500 goes back to the
caller, who knows whether the operation may be repeated. 400 and 422 are the caller's
mistakes; repeating them changes nothing.

``Retry-After`` is honoured in both forms, delay-seconds (``120``) and HTTP-date
(``Wed, 21 Oct 2026 07:28:00 GMT``), exactly: not shortened to ``max_backoff``. Without it
the wait is exponential with full jitter. Attempts and total time are bounded; when the
next wait would pass the deadline, the last answer (or error) goes back to the caller.
"""

from __future__ import annotations

import datetime
import email.utils
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from idemkit.errors import ConfigurationError
from integrations.circuit_breaker import BreakerState, CircuitBreaker

__all__ = [
    "RETRY_STATUSES",
    "Attempts",
    "RetryPolicy",
    "parse_retry_after",
]

RETRY_STATUSES: Final = frozenset({408, 409, 429, 502, 503, 504})
_SECONDS: Final = re.compile(r"[0-9]+", re.ASCII)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait for a ``Retry-After`` value: delay-seconds or an HTTP-date (RFC 9110
    10.2.3; a date in the past means 0). None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # An HTTP-date is always GMT; a date without a zone is read as GMT too.
    seconds = when.timestamp() if when.tzinfo else when.replace(tzinfo=datetime.UTC).timestamp()
    return max(0.0, seconds - (time.time() if now is None else now))


class RetryPolicy:
    """How often and how long a client retries (see the module docstring for what)."""

    def __init__(
        self,
        *,
        attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        deadline: float = 30.0,
        methods: Iterable[str] = ("POST", "PATCH"),
        statuses: Iterable[int] = RETRY_STATUSES,
    ) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ConfigurationError(f"attempts must be an int >= 1, got {attempts!r}")
        if backoff < 0 or max_backoff < 0 or deadline <= 0:
            raise ConfigurationError("backoff >= 0, max_backoff >= 0 and deadline > 0 seconds")
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.deadline = deadline
        self.methods = frozenset(m.upper() for m in methods)
        self.statuses = frozenset(statuses)

    def applies_to(self, method: str) -> bool:
        return method.upper() in self.methods

    def retryable(self, status: int, headers: Mapping[str, str]) -> bool:
        """Whether an answer asks for a retry; a replayed answer is final whatever its status."""
        if headers.get("idempotent-replayed", "").lower() == "true":
            return False
        return status in self.statuses

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds before attempt ``attempt + 1``: the server's ``Retry-After`` if it sent one,
        else exponential backoff with full jitter (clients that failed together spread out)."""
        asked = parse_retry_after(retry_after)
        if asked is not None:
            return asked
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))

    def start(
        self,
        breaker: CircuitBreaker | None = None,
        *,
        retry: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> Attempts:
        """The attempts of one request; ``retry=False`` for one that is sent once (a GET)."""
        return Attempts(self, breaker, clock, limit=self.attempts if retry else 1)


class Attempts:
    """The retry loop of one request, without its I/O (shared by the sync and async clients)::

    attempts = policy.start(breaker)
    while True:
        attempts.before()               # may raise CircuitOpenError
        try:
            response = send()
        except RETRIED_ERRORS:
            wait = attempts.failed()    # None: give up, re-raise
        except BaseException:
            attempts.abandoned(); raise
        else:
            wait = attempts.answered(status, headers)  # None: return this answer
        sleep(wait)
    """

    def __init__(
        self,
        policy: RetryPolicy,
        breaker: CircuitBreaker | None,
        clock: Callable[[], float],
        *,
        limit: int,
    ) -> None:
        self.policy = policy
        self.limit = limit
        self.breaker = breaker
        self._clock = clock
        self.deadline = clock() + policy.deadline
        self.attempt = 0  # attempts made so far

    def before(self) -> None:
        if self.breaker is not None:
            self.breaker.before_call()
        self.attempt += 1

    def failed(self) -> float | None:
        """A transport error: the seconds to wait before the next attempt, or None to stop."""
        if self.breaker is not None:
            self.breaker.record_failure()
        return self._next(None)

    def answered(self, status: int, headers: Mapping[str, str]) -> float | None:
        """An answer: the seconds to wait before the next attempt, or None to return it."""
        replayed = headers.get("idempotent-replayed", "").lower() == "true"
        if self.breaker is not None:
            if self.breaker.is_failure(status) and not replayed:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
        if not self.policy.retryable(status, headers):
            return None
        return self._next(headers.get("retry-after"))

    def abandoned(self) -> None:
        """The attempt ended without an answer or a retryable error (cancelled, a bug)."""
        if self.breaker is not None:
            self.breaker.record_ignored()

    def _next(self, retry_after: str | None) -> float | None:
        if self.attempt >= self.limit:
            return None
        if self.breaker is not None and self.breaker.state is not BreakerState.CLOSED:
            return None  # do not retry into a circuit that just opened
        wait = self.policy.delay(self.attempt - 1, retry_after)
        if self._clock() + wait >= self.deadline:
            return None
        return wait
