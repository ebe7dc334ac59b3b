"""``@idempotent`` on HTTP handlers: which framework a handler belongs to, and its adapter.

Supported: Starlette endpoints and FastAPI path operations (one wrapper,
:mod:`idemkit.handlers.starlette`) and Litestar route handlers
(:mod:`idemkit.handlers.litestar`; put ``@idempotent`` above ``@post(...)``). Anything else
fails when it is decorated, with a message that says what to do.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any, Literal

from idemkit.errors import ConfigurationError
from idemkit.exchange import HttpIdempotency
from idemkit.handlers.signature import resolved_signature

__all__ = ["Framework", "decorate_handler", "detect_framework"]

Framework = Literal["starlette", "fastapi", "litestar"]
_FAMILIES: dict[str, str] = {
    "starlette": "starlette",
    "fastapi": "starlette",
    "litestar": "litestar",
}


def decorate_handler(
    target: Any, exchange: HttpIdempotency, *, require_key: bool, framework: str | None
) -> Any:
    family = detect_framework(target, framework)
    if family == "litestar":
        from idemkit.handlers.litestar import attach

        return attach(target, exchange, require_key=require_key)
    from idemkit.handlers.starlette import wrap_endpoint

    return wrap_endpoint(target, exchange, require_key=require_key)


def _is_litestar_handler(target: object) -> bool:
    module = sys.modules.get("litestar.handlers")
    handler_type = getattr(module, "HTTPRouteHandler", None)
    return handler_type is not None and isinstance(target, handler_type)


def _package(value: object) -> str | None:
    module = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
    if not isinstance(module, str):
        module = getattr(type(value), "__module__", None)
    return module.partition(".")[0] if isinstance(module, str) else None


def detect_framework(target: Any, framework: str | None = None) -> str:
    """``"starlette"`` (Starlette or FastAPI) or ``"litestar"``; ConfigurationError otherwise."""
    if framework is not None and framework not in _FAMILIES:
        raise ConfigurationError(
            f"@idempotent supports framework='fastapi', 'starlette' or 'litestar' (or left out "
            f"for detection), got {framework!r}; for other ASGI frameworks use "
            "IdempotencyMiddleware"
        )
    if _is_litestar_handler(target):
        return "litestar"
    name = getattr(target, "__qualname__", repr(target))
    if inspect.isclass(target) or not callable(target):
        raise ConfigurationError(
            f"@idempotent decorates functions: {name} is not one; for class-based endpoints "
            "use IdempotencyMiddleware"
        )
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise ConfigurationError(
            f"{name} is a generator (a streamed path operation); @idempotent cannot capture "
            "it: return a StreamingResponse instead, or use IdempotencyMiddleware"
        )
    family = _FAMILIES.get(framework or "") or _guess(target, name)
    if family == "litestar":
        raise ConfigurationError(
            f"{name} looks like a Litestar handler: put @idempotent(...) above @post(...) "
            "(or @patch/@route), so it decorates the route handler Litestar builds"
        )
    return family


_OTHER_FRAMEWORKS = frozenset(
    {
        "django",
        "flask",
        "quart",
        "aiohttp",
        "sanic",
        "tornado",
        "falcon",
        "bottle",
        "rest_framework",
    }
)


def _guess(target: Callable[..., Any], name: str) -> str:
    for parameter in resolved_signature(target).parameters.values():
        annotation = typing.get_origin(parameter.annotation) or parameter.annotation
        package = _package(annotation) if annotation is not inspect.Parameter.empty else None
        if package == "litestar":
            return "litestar"
        if package in ("starlette", "fastapi"):
            return "starlette"
    namespace = getattr(target, "__globals__", {})
    seen = {_package(v) for v in namespace.values() if not isinstance(v, str | int | float)}
    # A function in a module that uses Starlette or FastAPI is one of their handlers (a
    # Litestar function is refused anyway: it has to be decorated above its route).
    if seen & {"starlette", "fastapi"}:
        return "starlette"
    if "litestar" in seen:
        return "litestar"
    others = sorted(p for p in seen & _OTHER_FRAMEWORKS if p)
    if others:
        hint = " (Django: use integrations.django)" if "django" in others else ""
        raise ConfigurationError(
            f"{name} is in a module using {', '.join(others)}, which @idempotent does not "
            f"support on handlers{hint}; supported are Starlette, FastAPI and Litestar, and "
            "any ASGI app through IdempotencyMiddleware"
        )
    raise ConfigurationError(
        f"cannot tell what {name} is: a plain function needs key=... (a function of its "
        "arguments returning the idempotency key); an HTTP handler needs a `request: Request` "
        "parameter or framework='fastapi' / 'starlette' / 'litestar'"
    )
