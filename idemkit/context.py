"""The fencing token of the request being executed, for handlers to present to resources.

The middleware runs a handler only while it holds the key's lease. A handler paused past
that lease (GC, SIGSTOP, a slow disk) can wake up after a retry has claimed the key again; its
response is then refused, but its *side effects* are only refused if the resource checks the
token. ``fencing_token(request)`` gives the handler that token::

    token = fencing_token(request)
    await fence.write(f"payment:{payment_id}", token, ...)   # refused if a newer token wrote
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SCOPE_KEY", "LeaseContext", "fencing_token", "lease_context"]

SCOPE_KEY = "idemkit"


@dataclass(frozen=True, slots=True)
class LeaseContext:
    """The lease under which the current request runs: its record key and fencing token."""

    record: str
    token: int


def lease_context(request_or_scope: Any) -> LeaseContext | None:
    """The lease of a request (a Starlette/FastAPI ``Request`` or an ASGI scope), or None when
    the request is not being executed under the middleware (no key, a replay, a GET)."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    if not isinstance(scope, Mapping):
        return None
    context = scope.get(SCOPE_KEY)
    return context if isinstance(context, LeaseContext) else None


def fencing_token(request_or_scope: Any) -> int | None:
    context = lease_context(request_or_scope)
    return None if context is None else context.token
