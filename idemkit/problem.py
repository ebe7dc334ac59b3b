"""RFC 9457 problem+json responses that the middleware sends on its own behalf."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from idemkit.lease import BUSY, MISMATCH

__all__ = ["Problem", "problem_headers"]

_TYPE_BASE = "urn:idemkit:problem:"


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    slug: str
    title: str
    detail: str
    retry_after: float | None = None

    def body(self) -> bytes:
        doc: dict[str, Any] = {
            "type": _TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def headers(self, body: bytes) -> list[tuple[bytes, bytes]]:
        return problem_headers(len(body), self.retry_after)


def problem_headers(length: int, retry_after: float | None) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(length).encode()),
        (b"cache-control", b"no-store"),
    ]
    if retry_after is not None:
        # Retry-After takes whole seconds; never advertise 0, which invites a hot retry loop.
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    return headers


def missing_key() -> Problem:
    return Problem(
        400,
        "missing-key",
        "Idempotency-Key required",
        "This operation requires an Idempotency-Key header; send a unique value such as a UUID "
        "and reuse it when you retry the same request.",
    )


def invalid_key(reason: str) -> Problem:
    return Problem(400, "invalid-key", "Invalid Idempotency-Key", reason)


def body_too_large(limit: int) -> Problem:
    return Problem(
        413,
        "body-too-large",
        "Request body too large",
        f"requests with an Idempotency-Key may carry at most {limit} bytes of body",
    )


def invalid_length() -> Problem:
    return Problem(
        400,
        "invalid-content-length",
        "Invalid Content-Length",
        "the Content-Length header is not a number; send the body's length in bytes",
    )


def client_gone() -> Problem:
    return Problem(
        400,
        "client-disconnected",
        "Client disconnected",
        "the client went away before the request body arrived; the request was not processed",
    )


def caller_unidentified(cause: str) -> Problem:
    return Problem(
        500,
        "caller-unidentified",
        "Caller cannot be identified",
        "the request was not processed: the service could not tell who is calling, so it "
        "cannot keep this caller's stored responses apart from other callers' "
        f"({cause}); this is a configuration error of the service",
    )


def key_reused() -> Problem:
    return Problem(
        422,
        "key-reused",
        "Idempotency-Key already used",
        "this Idempotency-Key was already used for a different request (method, path, query or "
        "body differ); use a new key for a new request",
    )


def in_flight(retry_after: float) -> Problem:
    return Problem(
        409,
        "request-in-flight",
        "Request in progress",
        "a request with this Idempotency-Key is still being processed; retry the same request "
        "after the Retry-After interval to receive its result",
        retry_after,
    )


def store_unavailable(retry_after: float) -> Problem:
    return Problem(
        503,
        "store-unavailable",
        "Idempotency store unavailable",
        "the request was not processed because its idempotency could not be guaranteed; "
        "retry the same request with the same Idempotency-Key later",
        retry_after,
    )


def store_evicts(policy: str, retry_after: float) -> Problem:
    return Problem(
        503,
        "store-evicts",
        "Idempotency store may lose records",
        f"the request was not processed: the service's Redis runs with maxmemory-policy "
        f"{policy!r}, which may evict stored responses, so a retry could run the request "
        "twice; the operator must configure 'noeviction'",
        retry_after,
    )


def unreadable(reason: str) -> Problem:
    return Problem(
        500,
        "stored-response-unreadable",
        "Stored response unreadable",
        "the request was already processed but its stored response cannot be read by this "
        f"version of the service ({reason}); it will not be processed again",
    )


def for_claim(outcome: int, retry_after: float) -> Problem | None:
    """The answer to a claim that neither granted the lease nor found a stored result."""
    if outcome == BUSY:
        return in_flight(retry_after)
    if outcome == MISMATCH:
        return key_reused()
    return None
