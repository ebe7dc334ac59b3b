"""Starlette endpoints and FastAPI path operations under ``@idempotent``.

Starlette calls an endpoint with the request as its one positional argument; FastAPI calls a
path operation with keyword arguments it resolved from the signature. One wrapper serves
both: its signature is the handler's, plus keyword-only parameters annotated ``Request``,
``Response`` and ``BackgroundTasks`` where the handler has none, so FastAPI injects the
request, the response whose status and headers the handler may set, and the background
tasks; Starlette ignores signatures.

Rendering, the framework's way:

- a returned ``Response`` is sent as it is (FastAPI gives it the request's background tasks);
- data returned from a FastAPI path operation is rendered by FastAPI itself: a route built
  from the path operation's public settings (``response_model``, ``status_code``,
  ``response_class``, the ``response_model_*`` options) with an endpoint that returns the
  value and carries over the status and headers the handler set on its ``Response``;
- an exception is rendered by the handler the app registered for it (found in the scope the
  way Starlette's own routing finds it, ``HTTPException`` included); with none, it is
  unhandled: the key is released and the exception propagates.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTasks
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from idemkit import problem as problems
from idemkit._types import ASGIApp, Receive, Scope, Send
from idemkit.exchange import HttpIdempotency
from idemkit.handlers.flow import handle
from idemkit.handlers.signature import (
    Injected,
    Slot,
    annotated_as,
    annotations_of,
    extend_signature,
)

__all__ = ["wrap_endpoint"]

_HIDDEN_REQUEST = "idemkit_request"
_HIDDEN_RESPONSE = "idemkit_response"
_HIDDEN_BACKGROUND = "idemkit_background"


class AsgiResponse(Response):
    """A Starlette ``Response`` whose sending is an ASGI app of idemkit's (a capture, a
    replay or a problem). Frameworks pass returned responses through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class StarletteAdapter:
    __slots__ = ("background", "request", "scope", "sub_response")

    def __init__(
        self,
        request: Request,
        sub_response: Response | None = None,
        background: BackgroundTasks | None = None,
    ) -> None:
        self.request = request
        self.scope = request.scope
        self.sub_response = sub_response
        self.background = background

    async def body(self, exchange: HttpIdempotency) -> bytes | problems.Problem | None:
        request = self.request
        cached = getattr(request, "_body", None)
        if isinstance(cached, bytes):  # FastAPI read it to fill body parameters
            limit = exchange.policy.max_body_bytes
            return cached if len(cached) <= limit else problems.body_too_large(limit)
        body = await exchange.read_body(self.scope, request.receive)
        if isinstance(body, bytes):
            request._body = body  # the handler reads the same bytes (Starlette's own cache)
        return body

    async def render(self, result: Any) -> ASGIApp:
        if isinstance(result, Response):
            if result.background is None and self.background is not None:
                result.background = self.background
            return result
        route = self.scope.get("route")
        if _is_fastapi_route(route):
            return await _render_fastapi(self.request, route, result, self)
        raise TypeError(
            f"the endpoint returned {type(result).__name__}, not a Response; Starlette "
            "endpoints must return a starlette.responses.Response"
        )

    async def render_exception(self, exc: Exception) -> ASGIApp | None:
        handlers = self.scope.get("starlette.exception_handlers")
        exception_handlers, status_handlers = handlers if handlers else ({}, {})
        handler = None
        if isinstance(exc, HTTPException):
            handler = status_handlers.get(exc.status_code)
        if handler is None:
            handler = next(
                (exception_handlers[c] for c in type(exc).__mro__ if c in exception_handlers),
                None,
            )
        if handler is None:
            return None
        if inspect.iscoroutinefunction(handler):
            response = await handler(self.request, exc)
        else:
            response = await run_in_threadpool(handler, self.request, exc)
        return response if response is not None else _nothing

    def wrap(self, app: ASGIApp) -> AsgiResponse:
        return AsgiResponse(app)


async def _nothing(scope: Scope, receive: Receive, send: Send) -> None:
    """An exception handler that answered nothing: the capture sees no response (release)."""


def wrap_endpoint(
    fn: Callable[..., Any], exchange: HttpIdempotency, *, require_key: bool
) -> Callable[..., Awaitable[Any]]:
    """The ``@idempotent`` wrapper of a Starlette endpoint or FastAPI path operation."""
    injected = Injected(
        (
            Slot(_HIDDEN_REQUEST, annotated_as(Request), Request),
            Slot(_HIDDEN_RESPONSE, annotated_as(Response), Response),
            Slot(_HIDDEN_BACKGROUND, annotated_as(BackgroundTasks), BackgroundTasks),
        )
    )
    signature = extend_signature(fn, injected)
    is_async = inspect.iscoroutinefunction(fn)

    @functools.wraps(fn)
    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], Request) and not kwargs:
            request: Request = args[0]  # Starlette: endpoint(request)
            adapter = StarletteAdapter(request)
        else:  # FastAPI: the resolved parameters by name
            found = injected.take(kwargs)
            request = found[_HIDDEN_REQUEST]
            adapter = StarletteAdapter(request, found[_HIDDEN_RESPONSE], found[_HIDDEN_BACKGROUND])

        async def call() -> Any:
            if is_async:
                return await fn(*args, **kwargs)
            return await run_in_threadpool(fn, *args, **kwargs)

        return await handle(exchange, adapter, call, require_key=require_key)

    endpoint.__signature__ = signature  # type: ignore[attr-defined]
    endpoint.__annotations__ = dict(annotations_of(signature))
    return endpoint


# -- FastAPI rendering -------------------------------------------------------------------

_rendering: contextvars.ContextVar[tuple[Any, Response | None]] = contextvars.ContextVar(
    "idemkit_rendering"
)
# Routes may not be hashable (FastAPI's define __eq__): keyed by id, dropped with the route.
_renderers: dict[int, Callable[[Request], Awaitable[Response]]] = {}


def _is_fastapi_route(route: object) -> bool:
    try:
        from fastapi.routing import APIRoute
    except ImportError:  # pragma: no cover - FastAPI is an extra
        return False
    return isinstance(route, APIRoute)


async def _render_fastapi(
    request: Request, route: Any, value: Any, adapter: StarletteAdapter
) -> Response:
    renderer = _renderers.get(id(route))
    if renderer is None:
        renderer = _renderers[id(route)] = _build_renderer(route)
        weakref.finalize(route, _renderers.pop, id(route), None)
    token = _rendering.set((value, adapter.sub_response))
    try:
        response = await renderer(request)
    finally:
        _rendering.reset(token)
    if response.background is None:
        response.background = adapter.background
    return response


async def _rendered_value(response: Response) -> Any:
    """Endpoint of the rendering route: the handler's value, with the status and headers the
    handler set on its own injected ``Response`` carried over to this one."""
    value, source = _rendering.get()
    if source is not None:
        if source.status_code is not None:
            response.status_code = source.status_code
        response.headers.raw.extend(source.headers.raw)
    return value


def _build_renderer(route: Any) -> Callable[[Request], Awaitable[Response]]:
    from fastapi.routing import APIRoute

    rendering = APIRoute(
        "/",
        _rendered_value,
        methods=["POST"],
        response_model=route.response_model,
        status_code=route.status_code,
        response_class=route.response_class,
        response_model_include=route.response_model_include,
        response_model_exclude=route.response_model_exclude,
        response_model_by_alias=route.response_model_by_alias,
        response_model_exclude_unset=route.response_model_exclude_unset,
        response_model_exclude_defaults=route.response_model_exclude_defaults,
        response_model_exclude_none=route.response_model_exclude_none,
    )
    return rendering.get_route_handler()
