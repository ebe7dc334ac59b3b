"""An httpx transport that makes mutating requests safe to retry.

It gives every POST/PATCH without an ``Idempotency-Key`` a fresh UUID4 key and retries the
*same* request with the *same* key on transport errors (connect, timeouts, dropped
connections) and on answers that say "try again": 409 (still in flight), 408, 429, 502, 503
and 504, honouring ``Retry-After``. Because the key stays the same, a retry after a lost
response gets the stored response instead of a second execution. Attempts and total time are
bounded.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable

import httpx

__all__ = ["IdempotentTransport", "RetryPolicy", "SyncIdempotentTransport"]

_RETRY_STATUSES = frozenset({408, 409, 429, 502, 503, 504})
_RETRY_ERRORS = (httpx.TransportError,)


class RetryPolicy:
    def __init__(
        self,
        *,
        attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        deadline: float = 30.0,
        methods: Iterable[str] = ("POST", "PATCH"),
        statuses: Iterable[int] = _RETRY_STATUSES,
    ) -> None:
        if attempts < 1 or backoff < 0 or max_backoff < 0 or deadline <= 0:
            raise ValueError("attempts >= 1, backoff >= 0, max_backoff >= 0 and deadline > 0")
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.deadline = deadline
        self.methods = frozenset(m.upper() for m in methods)
        self.statuses = frozenset(statuses)

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                return min(float(retry_after), self.max_backoff)
        # Full jitter: concurrent clients that failed together do not retry together.
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))


def _prepare(request: httpx.Request, policy: RetryPolicy) -> bool:
    if request.method not in policy.methods:
        return False
    if "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = str(uuid.uuid4())
    return True


class IdempotentTransport(httpx.AsyncBaseTransport):
    """Wraps an async transport: ``httpx.AsyncClient(transport=IdempotentTransport())``."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport | None = None, policy: RetryPolicy | None = None
    ) -> None:
        self.transport = transport or httpx.AsyncHTTPTransport()
        self.policy = policy or RetryPolicy()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not _prepare(request, self.policy):
            return await self.transport.handle_async_request(request)
        await request.aread()  # the body must be resendable
        policy = self.policy
        deadline = time.monotonic() + policy.deadline
        for attempt in range(policy.attempts):
            last = attempt == policy.attempts - 1
            try:
                response = await self.transport.handle_async_request(request)
            except _RETRY_ERRORS:
                if last or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(policy.delay(attempt, None))
                continue
            if response.status_code not in policy.statuses or last:
                return response
            delay = policy.delay(attempt, response)
            if time.monotonic() + delay >= deadline:
                return response
            await response.aclose()
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        await self.transport.aclose()


class SyncIdempotentTransport(httpx.BaseTransport):
    """The blocking twin: ``httpx.Client(transport=SyncIdempotentTransport())``."""

    def __init__(
        self, transport: httpx.BaseTransport | None = None, policy: RetryPolicy | None = None
    ) -> None:
        self.transport = transport or httpx.HTTPTransport()
        self.policy = policy or RetryPolicy()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not _prepare(request, self.policy):
            return self.transport.handle_request(request)
        request.read()
        policy = self.policy
        deadline = time.monotonic() + policy.deadline
        for attempt in range(policy.attempts):
            last = attempt == policy.attempts - 1
            try:
                response = self.transport.handle_request(request)
            except _RETRY_ERRORS:
                if last or time.monotonic() >= deadline:
                    raise
                time.sleep(policy.delay(attempt, None))
                continue
            if response.status_code not in policy.statuses or last:
                return response
            delay = policy.delay(attempt, response)
            if time.monotonic() + delay >= deadline:
                return response
            response.close()
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def close(self) -> None:
        self.transport.close()
