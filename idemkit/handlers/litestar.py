"""Litestar route handlers under ``@idempotent``.

Litestar route handlers take ASGI middleware of their own, run inside the handler's route:
``@idempotent`` placed above ``@post(...)`` receives the route handler and adds a middleware
that runs :meth:`idemkit.exchange.HttpIdempotency.serve`, the middleware's own path, around
it. Everything Litestar does to produce the response (parameter parsing, DTOs, exception
handlers, ``after_request`` hooks, the response class) happens inside, and is captured as
sent: an ``HTTPException`` is stored as Litestar renders it.

Litestar turns every exception into a response inside the route, so an unhandled exception
arrives as a 500 like one the handler returned. To release the key for it, as the middleware
does for an exception, the handler's function is wrapped to note exceptions Litestar has no
handler for; the exchange releases when it finds one noted.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any, cast

from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler

from idemkit._types import ASGIApp, Receive, Scope, Send
from idemkit.exchange import HttpIdempotency

__all__ = ["attach"]

# The exceptions the handler function raised in the current request, noted for the exchange.
_raised: contextvars.ContextVar[list[BaseException] | None] = contextvars.ContextVar(
    "idemkit_litestar_raised", default=None
)


def attach(
    handler: HTTPRouteHandler, exchange: HttpIdempotency, *, require_key: bool
) -> HTTPRouteHandler:
    """Make ``handler`` idempotent: the exchange as its innermost middleware, and its
    function wrapped to note unhandled exceptions."""

    def middleware(app: ASGIApp) -> ASGIApp:
        return _HandlerIdempotency(app, exchange, require_key)

    handler.middleware = [*(handler.middleware or ()), cast(Any, middleware)]
    handler._fn = _noting_exceptions(handler.fn, handler)
    return handler


class _HandlerIdempotency:
    def __init__(self, app: ASGIApp, exchange: HttpIdempotency, require_key: bool) -> None:
        self.app = app
        self.exchange = exchange
        self.require_key = require_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self.exchange.policy.methods:
            await self.app(scope, receive, send)
            return
        noted: list[BaseException] = []
        token = _raised.set(noted)
        try:
            await self.exchange.serve(
                self.app,
                scope,
                receive,
                send,
                required=self.require_key,
                raised=lambda: bool(noted),
            )
        finally:
            _raised.reset(token)


def _noting_exceptions(fn: Callable[..., Any], handler: HTTPRouteHandler) -> Callable[..., Any]:
    def note(exc: BaseException) -> None:
        noted = _raised.get()
        if noted is not None and not _handled(handler, exc):
            noted.append(exc)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_handler(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                note(exc)
                raise

        return async_handler

    @functools.wraps(fn)
    def sync_handler(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            note(exc)
            raise

    return sync_handler


def _handled(handler: HTTPRouteHandler, exc: BaseException) -> bool:
    """True when Litestar renders ``exc`` with a handler of the app's: an HTTPException, or a
    class registered in ``exception_handlers`` (not the catch-all for status 500)."""
    if isinstance(exc, HTTPException):
        return True
    handlers = handler.resolve_exception_handlers()
    return any(cls in handlers for cls in type(exc).__mro__)
