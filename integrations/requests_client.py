"""A ``requests`` adapter that makes mutating requests safe to retry.

Same semantics as :mod:`integrations.httpx_client` (see :mod:`integrations.retry` for what is
retried and why): every POST/PATCH without an ``Idempotency-Key`` gets a fresh UUID4 key,
and is resent with the same key and body after a lost answer or a "try again" status,
honouring ``Retry-After`` (seconds or HTTP-date), within bounded attempts and time::

    session = idempotent_session(breaker=CircuitBreaker(name="shop"))
    session.post("https://shop.example/orders", json=order)

or mount :class:`IdempotentAdapter` on a session of your own. urllib3's own retries stay off
(``max_retries=0``): they would resend without knowing about keys, and stack on these.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from integrations._extras import missing_extra

try:
    import requests
    from requests.adapters import HTTPAdapter
except ImportError as exc:
    raise missing_extra(__name__, "requests", exc) from exc

from integrations.circuit_breaker import CircuitBreaker, CircuitOpenError
from integrations.retry import RetryPolicy

__all__ = [
    "RETRIED_ERRORS",
    "CircuitOpenError",
    "IdempotentAdapter",
    "RetryPolicy",
    "idempotent_session",
]

# Errors after which the request may or may not have run: safe to resend under the same key.
# ConnectionError covers refused and reset connections and answers that never came;
# ChunkedEncodingError an answer cut off half-way. (SSLError is excluded below: a
# certificate does not get better by asking again.)
RETRIED_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


class IdempotentAdapter(HTTPAdapter):
    """``session.mount("https://", IdempotentAdapter(policy, breaker=breaker))``."""

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        *,
        breaker: CircuitBreaker | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_retries", 0)
        super().__init__(**kwargs)
        self.policy = policy or RetryPolicy()
        self.breaker = breaker

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        retried = request.method is not None and self.policy.applies_to(request.method)
        if retried:
            _prepare(request)
        attempts = self.policy.start(self.breaker, retry=retried)
        while True:
            attempts.before()
            try:
                response = super().send(
                    request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                    proxies=proxies,
                )  # fmt: skip
                if not stream:
                    # Read the body here, so an answer cut off half-way is retried too.
                    _ = response.content
            except requests.exceptions.SSLError:
                attempts.abandoned()
                raise
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


def _prepare(request: requests.PreparedRequest) -> None:
    if "idempotency-key" not in request.headers:
        request.headers["Idempotency-Key"] = str(uuid.uuid4())
    body = request.body
    if body is None or isinstance(body, bytes | str):
        return
    # A generator or a file is consumed by the first attempt: read it once, resend the bytes.
    data = body.read() if hasattr(body, "read") else b"".join(_as_bytes(c) for c in body)
    request.body = _as_bytes(data)
    request.headers.pop("Transfer-Encoding", None)
    request.headers["Content-Length"] = str(len(request.body))


def _as_bytes(chunk: bytes | str) -> bytes:
    return chunk.encode() if isinstance(chunk, str) else chunk


def idempotent_session(
    policy: RetryPolicy | None = None,
    *,
    breaker: CircuitBreaker | None = None,
    session: requests.Session | None = None,
) -> requests.Session:
    """A session (``session`` or a new one) with :class:`IdempotentAdapter` on http and https."""
    session = session or requests.Session()
    adapter = IdempotentAdapter(policy, breaker=breaker)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
