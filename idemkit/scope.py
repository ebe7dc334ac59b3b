"""Who is calling: the scope that keeps one caller's stored responses from another's.

The record of a key is named by (caller, key), so the same key sent by two callers gives two
independent executions and neither ever sees the other's answer. The default,
:func:`credentials_caller`, takes the caller from what the request itself proves:

1. an authenticated ``scope["user"]`` (Starlette's ``AuthenticationMiddleware``, Litestar's
   auth middleware, idemkit's Django middleware): its ``identity``, never its
   ``display_name`` (two people may share a display name). A user object that claims to be
   authenticated but has no usable ``identity`` is an error (:class:`CallerIdentityError`),
   never a silent fall-back to a shared namespace;
2. else a hash of the credential headers (``Authorization``, ``Proxy-Authorization``,
   ``X-API-Key``, ``Api-Key``, ``X-Auth-Token``, ``X-Access-Token``, ``X-Api-Token``): the
   raw value, so a token refreshed between an attempt and its retry is a new caller (use a
   stable principal id, see :func:`user_caller`);
3. else :data:`ANONYMOUS`: every request without credentials shares one namespace, where the
   key is the only secret.

Cookies are deliberately left out: a first response may set one, and the retry that carries
it must still find its record. Services whose callers are identified by a session cookie
must let idemkit see the session's user (``scope["user"]``) or pass ``caller=``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from hashlib import blake2b
from typing import Any, Final

from idemkit.errors import CallerIdentityError

__all__ = [
    "ANONYMOUS",
    "CREDENTIAL_HEADERS",
    "CallerResolver",
    "credentials_caller",
    "header_caller",
    "user_caller",
    "user_identity",
]

ANONYMOUS: Final = "anonymous"
CallerResolver = Callable[[Mapping[str, Any]], str]
CREDENTIAL_HEADERS: Final = frozenset(
    {
        b"authorization",
        b"proxy-authorization",
        b"x-api-key",
        b"api-key",
        b"x-auth-token",
        b"x-access-token",
        b"x-api-token",
    }
)


def user_identity(user: object) -> str | None:
    """The stable id of an authenticated user object, None for an anonymous one.

    Raises :class:`CallerIdentityError` for a user that is (or may be) authenticated but
    has no usable ``identity``: guessing would put two users into one namespace.
    """
    authenticated = getattr(user, "is_authenticated", None)
    if authenticated is False:
        return None
    kind = type(user).__name__
    try:
        identity = user.identity  # type: ignore[attr-defined]
    except (NotImplementedError, AttributeError):
        raise CallerIdentityError(
            f"scope['user'] is a {kind} without an `identity`; idemkit scopes stored responses "
            "by it (never by display_name, which two users may share). Give the user class an "
            "`identity` property returning a stable unique id, or pass caller=... "
            "(e.g. idemkit.scope.user_caller(lambda user: user.id))"
        ) from None
    if identity is None or identity == "":
        raise CallerIdentityError(
            f"scope['user'] is a {kind} whose `identity` is empty; return a stable unique id"
        )
    return str(identity)


def credentials_caller(scope: Mapping[str, Any]) -> str:
    """The default caller: authenticated user, else credential headers, else anonymous."""
    user = scope.get("user")
    if user is not None:
        identity = user_identity(user)
        if identity is not None:
            return f"user:{identity}"
    h: blake2b | None = None
    for name, value in scope["headers"]:
        if name in CREDENTIAL_HEADERS:
            if h is None:
                h = blake2b(digest_size=16)
            h.update(name)
            h.update(b"=")
            h.update(value)
            h.update(b"\0")
    return ANONYMOUS if h is None else f"cred:{h.hexdigest()}"


def header_caller(header: str) -> CallerResolver:
    """A resolver using one header's value (e.g. ``X-Tenant-Id`` set by a trusted gateway).

    Requests without the header are :data:`ANONYMOUS`.
    """
    wanted = header.lower().encode("latin-1")

    def resolve(scope: Mapping[str, Any]) -> str:
        for name, value in scope["headers"]:
            if name == wanted:
                return f"{header}:{value.decode('latin-1')}"
        return ANONYMOUS

    return resolve


def user_caller(principal: Callable[[Any], object]) -> CallerResolver:
    """A resolver using ``principal(scope["user"])``: the stable id your auth layer verified.

    ``caller=user_caller(lambda user: user.id)`` keeps one namespace per user even when the
    user's bearer token is refreshed between an attempt and its retry. Requests without a
    ``scope["user"]`` fall back to :func:`credentials_caller`.
    """

    def resolve(scope: Mapping[str, Any]) -> str:
        user = scope.get("user")
        if user is None or getattr(user, "is_authenticated", True) is False:
            return credentials_caller(scope)
        value = principal(user)
        if value is None or value == "":
            raise CallerIdentityError(
                f"the principal function returned {value!r} for a {type(user).__name__}; "
                "return a stable unique id"
            )
        return f"user:{value}"

    return resolve
