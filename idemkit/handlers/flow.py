"""``@idempotent`` on an HTTP handler: the framework-independent part.

The framework calls the decorated handler with its arguments; the decorator cannot see the
ASGI messages the framework sends afterwards. So it does the framework's last step itself:
it runs the handler, turns what the handler produced into the response the framework would
send (a returned response as is, returned data rendered the framework's way, an exception
rendered by the app's exception handlers), and returns an ASGI response object whose sending
goes through :meth:`idemkit.exchange.Execution.run`, the path the middleware uses. Replays
and problems are ASGI responses from :meth:`idemkit.exchange.HttpIdempotency.respond`.

An :class:`Adapter` supplies what differs per framework (:mod:`idemkit.handlers.starlette`,
:mod:`idemkit.handlers.litestar`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from idemkit import problem as problems
from idemkit._types import ASGIApp, Receive, Scope, Send
from idemkit.exchange import HttpIdempotency

__all__ = ["Adapter", "handle"]


class Adapter(Protocol):
    """One framework's request as seen from inside a decorated handler."""

    scope: Scope

    async def body(self, exchange: HttpIdempotency) -> bytes | problems.Problem | None:
        """The request body within the exchange's limit, a 413 problem, or None when the
        client went away."""

    async def render(self, result: Any) -> ASGIApp:
        """What the framework sends for the handler's return value."""

    async def render_exception(self, exc: Exception) -> ASGIApp | None:
        """The app's rendering of an exception it has a handler for; None when it has none
        (an unhandled exception: the key is released and the exception propagates)."""

    def wrap(self, app: ASGIApp) -> Any:
        """An object the framework accepts as the handler's return value and that, when the
        framework sends it, runs ``app`` (the framework's response type)."""


async def handle(
    exchange: HttpIdempotency,
    adapter: Adapter,
    call: Callable[[], Awaitable[Any]],
    *,
    require_key: bool,
) -> Any:
    """Run the handler ``call`` under the exchange's rules; return what the framework sends."""
    scope = adapter.scope
    if scope["method"] not in exchange.policy.methods:
        return await call()

    async def read_body() -> bytes | problems.Problem | None:
        return await adapter.body(exchange)

    decision = await exchange.admit(scope, required=require_key, read_body=read_body)
    if decision.gone:
        decision.problem = problems.client_gone()
    execution = decision.execution
    if execution is None:
        if decision.unguarded:
            return await call()

        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            await exchange.respond(decision, send)

        return adapter.wrap(respond)

    try:
        result = await call()
    except asyncio.CancelledError:
        await execution.abort(cancelled=True)
        raise
    except Exception as exc:
        try:
            app = await adapter.render_exception(exc)
        except BaseException:
            await execution.abort()
            raise
        if app is None:
            await execution.abort()
            raise
    else:
        try:
            app = await adapter.render(result)
        except BaseException:
            await execution.abort()
            raise

    async def run(scope: Scope, receive: Receive, send: Send) -> None:
        await execution.run(app, scope, receive, send)

    response = adapter.wrap(run)
    execution.guard(response)
    return response
