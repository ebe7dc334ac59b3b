"""An httpx transport that makes mutating requests safe to retry.

``httpx.AsyncClient(transport=IdempotentTransport())`` (or ``httpx.Client`` with
:class:`SyncIdempotentTransport`) gives every POST/PATCH without an ``Idempotency-Key`` a
fresh UUID4 key and retries the *same* request, with the *same* key and body, on transport
errors where the answer may have been lost and on 408, 409, 429, 502, 503 and 504, honouring
``Retry-After`` (seconds or HTTP-date). A replayed answer and a 500 are final. Attempts and
total time are bounded. :mod:`integrations.retry` says exactly what is retried and why.

``breaker=`` takes a :class:`~integrations.circuit_breaker.CircuitBreaker` shared by the
clients of one service: while it is open, requests fail at once with
:class:`~integrations.circuit_breaker.CircuitOpenError` instead of reaching the service.
Other methods pass through once (through the breaker too, if one is given).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from integrations._extras import missing_extra

try:
    import httpx
except ImportError as exc:
    raise missing_extra(__name__, "httpx", exc) from exc

from integrations.circuit_breaker import CircuitBreaker, CircuitOpenError
from integrations.retry import RetryPolicy

__all__ = [
    "RETRIED_ERRORS",
    "CircuitOpenError",
    "IdempotentTransport",
    "RetryPolicy",
    "SyncIdempotentTransport",
]

# Errors after which the request may or may not have run: safe to resend under the same key.
# Not UnsupportedProtocol, InvalidURL or a proxy refusing: resending cannot help those.
RETRIED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def _prepare(request: httpx.Request, policy: RetryPolicy) -> bool:
    if not policy.applies_to(request.method):
        return False
    if "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = str(uuid.uuid4())
    return True


class IdempotentTransport(httpx.AsyncBaseTransport):
    """Wraps an async transport: ``httpx.AsyncClient(transport=IdempotentTransport())``."""

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        policy: RetryPolicy | None = None,
        *,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.transport = transport or httpx.AsyncHTTPTransport()
        self.policy = policy or RetryPolicy()
        self.breaker = breaker

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        retried = _prepare(request, self.policy)
        if retried:
            await request.aread()  # the body must be resendable
        attempts = self.policy.start(self.breaker, retry=retried)
        while True:
            attempts.before()
            try:
                response = await self.transport.handle_async_request(request)
            except RETRIED_ERRORS:
                wait = attempts.failed()
                if wait is None:
                    raise
            except BaseException:
                attempts.abandoned()
                raise
            else:
                wait = attempts.answered(response.status_code, response.headers)
                if wait is None:
                    return response
                await response.aclose()
            await asyncio.sleep(wait)

    async def aclose(self) -> None:
        await self.transport.aclose()


class SyncIdempotentTransport(httpx.BaseTransport):
    """The blocking twin: ``httpx.Client(transport=SyncIdempotentTransport())``."""

    def __init__(
        self,
        transport: httpx.BaseTransport | None = None,
        policy: RetryPolicy | None = None,
        *,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.transport = transport or httpx.HTTPTransport()
        self.policy = policy or RetryPolicy()
        self.breaker = breaker

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        retried = _prepare(request, self.policy)
        if retried:
            request.read()
        attempts = self.policy.start(self.breaker, retry=retried)
        while True:
            attempts.before()
            try:
                response = self.transport.handle_request(request)
            except RETRIED_ERRORS:
                wait = attempts.failed()
                if wait is None:
                    raise
            except BaseException:
                attempts.abandoned()
                raise
            else:
                wait = attempts.answered(response.status_code, response.headers)
                if wait is None:
                    return response
                response.close()
            time.sleep(wait)

    def close(self) -> None:
        self.transport.close()
