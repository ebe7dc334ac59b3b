"""Who is calling: the scope that keeps one caller's stored responses from another's.

The default derives the scope from the credentials the request carries: an authenticated
``scope["user"]`` (Starlette's AuthenticationMiddleware), else a hash of the ``Authorization``
and ``X-API-Key`` headers. Cookies are deliberately left out: a first response may set one,
and a retry carrying it must still find its record. Requests with no credentials share the
``anonymous`` scope; services with anonymous mutating endpoints, or with cookie sessions and no
``scope["user"]``, should pass a resolver of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from hashlib import blake2b
from typing import Any

__all__ = ["ANONYMOUS", "CallerResolver", "credentials_caller", "header_caller"]

ANONYMOUS = "anonymous"
CallerResolver = Callable[[Mapping[str, Any]], str]
_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")


def credentials_caller(scope: Mapping[str, Any]) -> str:
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        identity = getattr(user, "identity", None) or getattr(user, "display_name", None)
        if identity:
            return f"user:{identity}"
    h: blake2b | None = None
    for name, value in scope["headers"]:
        if name in _CREDENTIAL_HEADERS:
            if h is None:
                h = blake2b(digest_size=16)
            h.update(name)
            h.update(b"=")
            h.update(value)
            h.update(b"\0")
    return ANONYMOUS if h is None else f"cred:{h.hexdigest()}"


def header_caller(header: str) -> CallerResolver:
    """A resolver using one header's value (e.g. ``X-Tenant-Id`` set by a trusted gateway)."""
    wanted = header.lower().encode("latin-1")

    def resolve(scope: Mapping[str, Any]) -> str:
        for name, value in scope["headers"]:
            if name == wanted:
                return f"{header}:{value.decode('latin-1')}"
        return ANONYMOUS

    return resolve
