"""Litestar: a plugin that makes an app's mutating routes idempotent, scoped by its users.

::

    app = Litestar(
        route_handlers=[...],
        middleware=[auth_middleware],            # sets scope["user"]
        plugins=[IdempotencyPlugin(redis, user_id=lambda user: user.id, require_key=True)],
    )

The plugin adds ``IdempotencyMiddleware``'s path (:meth:`idemkit.exchange.HttpIdempotency.serve`)
as the app's innermost app-level middleware, so it runs after routing and after
authentication: keys are scoped by ``user_id(scope["user"])`` for authenticated requests (the
stable id your auth layer verified, never a display name), else by the credential headers.
Litestar renders every exception inside the route; the plugin's ``after_exception`` hook
notes the ones Litestar has no handler for, which release the key (an ``HTTPException``, or
an exception with a registered handler, is a response and is stored), as ``@idempotent``
does on a single Litestar handler. Events carry the route template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Unpack, cast

from integrations._extras import missing_extra

try:
    from litestar.config.app import AppConfig
    from litestar.middleware import DefineMiddleware
    from litestar.plugins import InitPluginProtocol
except ImportError as exc:
    raise missing_extra(__name__, "litestar", exc) from exc

from idemkit._types import ASGIApp, Receive, Scope, Send
from idemkit.exchange import HttpIdempotency
from idemkit.handlers.litestar import _handled, _raised
from idemkit.middleware import Coverage, as_lease_store
from idemkit.observe import Observer
from idemkit.policy import IdempotencyPolicy, PolicyOptions
from idemkit.scope import user_caller

__all__ = ["IdempotencyPlugin"]


class IdempotencyPlugin(InitPluginProtocol):
    """``plugins=[IdempotencyPlugin(store, user_id=...)]``.

    ``store``: a ``redis.asyncio`` client or an :class:`idemkit.LeaseStore`. ``user_id``
    maps Litestar's authenticated ``scope["user"]`` to its stable id (default: the user's
    ``identity`` attribute). ``require_key`` and ``exempt_paths`` are the middleware's (True,
    False or path globs); the other options are the policy's.
    """

    def __init__(
        self,
        store: Any,
        *,
        user_id: Callable[[Any], object] | None = None,
        require_key: bool | Iterable[str] = False,
        exempt_paths: Iterable[str] = (),
        observer: Observer | None = None,
        **options: Unpack[PolicyOptions],
    ) -> None:
        if user_id is not None:
            if "caller" in options:
                raise TypeError("pass user_id= or caller=, not both")
            options["caller"] = user_caller(user_id)
        self.policy = IdempotencyPolicy.from_options(**options)
        self.exchange = HttpIdempotency(as_lease_store(store), self.policy, observer)
        self.coverage = Coverage(self.policy.methods, require_key, exempt_paths)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        # idemkit's ASGI types are plain mappings; Litestar's are TypedDicts of the same shape.
        middleware = cast(Any, _PluginMiddleware)
        app_config.middleware.append(
            DefineMiddleware(middleware, exchange=self.exchange, coverage=self.coverage)
        )
        app_config.after_exception.append(cast(Any, _note_unhandled))
        return app_config


class _PluginMiddleware:
    def __init__(self, app: ASGIApp, exchange: HttpIdempotency, coverage: Coverage) -> None:
        self.app = app
        self.exchange = exchange
        self.coverage = coverage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        required = self.coverage.required(scope["method"], scope["path"])
        if required is None:
            await self.app(scope, receive, send)
            return
        noted: list[BaseException] = []
        token = _raised.set(noted)
        try:
            await self.exchange.serve(
                self.app, scope, receive, send, required=required, raised=lambda: bool(noted)
            )
        finally:
            _raised.reset(token)


async def _note_unhandled(exc: BaseException, scope: Scope) -> None:
    noted = _raised.get()
    handler = scope.get("route_handler")
    if noted is not None and (handler is None or not _handled(handler, exc)):
        noted.append(exc)
