"""Idempotency-Key for Django: a ``MIDDLEWARE`` entry for sync and async views, WSGI and ASGI.

::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "integrations.django.IdempotencyMiddleware",   # after authentication
        ...,
    ]
    IDEMKIT = {
        "REDIS_URL": "redis://localhost:6379/0",
        "REQUIRE_KEY": ["/api/payments*"],   # True, False or path globs (default False)
        "EXEMPT_PATHS": [],                  # path globs the middleware never touches
        "OPTIONS": {"ttl": 24 * 3600},       # idemkit policy options (see README)
        "OBSERVER": None,                    # an idemkit observer, or its dotted path
    }

The rules are the ASGI middleware's, from the same functions (:mod:`idemkit.http_rules`):
key syntax, 400/409/413/422/503 problem answers, fingerprint, what is stored and replayed,
which statuses release the key. What differs is only the plumbing: under WSGI (a sync
middleware chain) every store call goes through the blocking client and
:class:`idemkit.sync_engine.SyncEngine`; under ASGI with an async chain, through the asyncio
client and the exchange's own :class:`~idemkit.exchange.Execution`. Django picks the mode
(``sync_and_async_middleware``); no event loop is ever run in a thread by idemkit.

Callers are scoped by ``request.user``: an authenticated user's primary key (never the
username, which can change or be reused), so two logged-in users sending the same key get
two executions. Requests without an authenticated user fall back to the credential headers
(``Authorization``: DRF token and basic authentication happen inside the view, after this
middleware, so their callers are told apart by the header they send), then to the shared
anonymous namespace. ``OPTIONS["caller"]`` overrides it with a function of the request's
ASGI-like description (``scope["user"].user`` is the Django user).

An exception Django has no handler for (Django's ``got_request_exception``: the one that
becomes a 500 page) releases the key, as it does on ASGI; a response the view returned,
``Http404`` and ``PermissionDenied`` pages included, is stored. Streaming responses are
captured as they stream and stored when the last chunk went out (released if the client
went away first); a ``FileResponse`` is streamed through the capture as well.
``idemkit.fencing_token(request)`` gives a view the token of the lease it runs under.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from http.cookies import SimpleCookie
from typing import Any, cast

from integrations._extras import missing_extra

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.core.signals import got_request_exception
    from django.http import HttpRequest, HttpResponse
    from django.http.response import HttpResponseBase
    from django.utils.decorators import sync_and_async_middleware
    from django.utils.module_loading import import_string
except ImportError as exc:
    raise missing_extra(__name__, "django", exc) from exc

import redis
import redis.asyncio as aioredis

from idemkit import problem as problems
from idemkit.codec import StoredResponse
from idemkit.context import SCOPE_KEY, LeaseContext
from idemkit.engine import outcome_of
from idemkit.errors import InvalidKeyError, StoreUnavailableError
from idemkit.exchange import Execution, HttpIdempotency
from idemkit.http_rules import (
    ResponseRecorder,
    Verdict,
    claim_verdict,
    completion_record,
    declared_length_problem,
    identify_caller,
    problem_outcome,
    replay_headers,
    request_key,
    store_failure_verdict,
    warn_shared_namespace,
)
from idemkit.lease import SyncLeaseStore
from idemkit.middleware import Coverage, as_lease_store
from idemkit.observe import Observer, Stopwatch, emit
from idemkit.policy import IdempotencyPolicy
from idemkit.problem import Problem
from idemkit.sync_engine import SyncEngine, SyncRenewal

__all__ = ["IdempotencyMiddleware", "aclose_clients", "request_scope"]

_SETTINGS = frozenset(
    {"REDIS_URL", "REDIS_OPTIONS", "REQUIRE_KEY", "EXEMPT_PATHS", "OPTIONS", "OBSERVER"}
)
_AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
# Set on a request by got_request_exception: Django turned an unhandled exception into a 500.
_RAISED = "_idemkit_raised"


class _User:
    """An authenticated Django user as idemkit's caller scope sees it: ``identity`` is the
    primary key; ``user`` is the Django user, for custom ``caller=`` functions."""

    __slots__ = ("identity", "user")
    is_authenticated = True

    def __init__(self, user: Any) -> None:
        self.user = user
        self.identity = str(user.pk)


def request_scope(request: HttpRequest, user: Any = None) -> dict[str, Any]:
    """The ASGI-like description of a Django request that idemkit's rules read: method,
    path, raw query string, headers as lower-case byte pairs, and ``user`` when ``user`` is
    an authenticated Django user."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in request.META.items():
        if name.startswith("HTTP_"):
            header = name[5:].replace("_", "-").lower()
        elif name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            header = name.replace("_", "-").lower()
        else:
            continue
        if isinstance(value, str) and value != "":
            headers.append((header.encode("latin-1"), value.encode("latin-1")))
    scope: dict[str, Any] = {
        "type": "http",
        "method": request.method or "GET",
        "path": request.path,
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
    }
    _add_user(scope, user)
    return scope


def _add_user(scope: dict[str, Any], user: Any) -> None:
    if user is not None and getattr(user, "is_authenticated", False):
        scope["user"] = _User(user)


def _note_exception(sender: object, request: HttpRequest | None = None, **_: object) -> None:
    if request is not None:
        setattr(request, _RAISED, True)


got_request_exception.connect(_note_exception, dispatch_uid="idemkit-django-raised", weak=False)


# -- Django request and response <-> idemkit -----------------------------------------------


def _django_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> HttpResponse:
    response = HttpResponse(body, status=status)
    del response["Content-Type"]  # only the stored headers
    for name, value in headers:
        text, raw = name.decode("latin-1"), value.decode("latin-1")
        if name == b"set-cookie":  # replayed only when configured: one header per cookie
            response.cookies.load(raw)
        elif text in response.headers:
            response.headers[text] = f"{response.headers[text]}, {raw}"
        else:
            response.headers[text] = raw
    return response


def _problem_response(problem: Problem) -> HttpResponse:
    body = problem.body()
    return _django_response(problem.status, problem.headers(body), body)


def _replay_response(stored: StoredResponse) -> HttpResponse:
    return _django_response(stored.status, replay_headers(stored), stored.body)


def _headers_of(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    cookies = cast(SimpleCookie, response.cookies)
    for cookie in cookies.values():
        headers.append((b"set-cookie", cookie.output(header="").strip().encode("latin-1")))
    return headers


def _route(request: HttpRequest) -> str | None:
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    return route if isinstance(route, str) and route else None


def _expose(request: HttpRequest, context: LeaseContext) -> None:
    """Make ``idemkit.fencing_token(request)`` work in the view (it reads ``request.scope``)."""
    scope = getattr(request, "scope", None)
    if isinstance(scope, dict):  # ASGIRequest: the real ASGI scope
        scope[SCOPE_KEY] = context
    else:
        request.scope = {SCOPE_KEY: context}


# -- one execution, sync or async ------------------------------------------------------------


class _Running:
    """A request that holds its key's lease, until its response is stored or released.

    ``end``/``aend`` take the response it produced (None: it produced none, or raised);
    the first call wins. ``end`` may be called from a thread, ``aend`` on the event loop
    (a streamed body is finished wherever Django iterates it).
    """

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    def end(self, stored: StoredResponse | None) -> None:
        raise NotImplementedError

    async def aend(self, stored: StoredResponse | None) -> None:
        raise NotImplementedError


class _SyncRunning(_Running):
    def __init__(
        self,
        middleware: IdempotencyMiddleware,
        request: HttpRequest,
        record: str,
        token: int,
        renewal: SyncRenewal,
        clock: Stopwatch,
    ) -> None:
        self._middleware = middleware
        self._request = request
        self._record = record
        self._token = token
        self._renewal = renewal
        self._clock = clock
        self._lock = threading.Lock()
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def end(self, stored: StoredResponse | None) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self._renewal.stop()
        middleware, engine = self._middleware, self._middleware.sync_engine
        record = completion_record(stored, middleware.policy)
        if record is None:
            middleware.event(self._clock, "released", self._request)
            engine.release(self._record, self._token)
            return
        done = engine.complete(
            self._record, self._token, record, self._renewal.valid_until, self._late
        )
        middleware.event(self._clock, outcome_of(done), self._request)

    async def aend(self, stored: StoredResponse | None) -> None:
        # Only reached when Django serves an async stream from a sync chain (WSGI), in an
        # event loop of Django's own: the blocking client is the one this request uses.
        self.end(stored)

    def _late(self, done: Any) -> None:
        route = _route(self._request)
        event = Stopwatch().event("idempotency.completion", outcome_of(done), route=route)
        emit(self._middleware.observer, event)


class _AsyncRunning(_Running):
    def __init__(self, execution: Execution, request: HttpRequest, scope: dict[str, Any]) -> None:
        self._execution = execution
        self._request = request
        self._scope = scope
        self._loop = asyncio.get_running_loop()

    @property
    def finished(self) -> bool:
        return self._execution.finished

    def label(self) -> None:
        """Give the execution's events the route Django resolved (``route_template``)."""
        route = _route(self._request)
        if route is not None:
            self._scope["path_template"] = route

    async def aend(self, stored: StoredResponse | None) -> None:
        self.label()
        await self._execution.complete(stored)

    def end(self, stored: StoredResponse | None) -> None:
        # A sync stream served from the async chain: Django iterates it in a worker thread
        # while the loop waits for it, so the completion runs on that loop.
        asyncio.run_coroutine_threadsafe(self.aend(stored), self._loop).result()


# -- capture of the view's response ------------------------------------------------------------


def _finish(running: _Running, response: HttpResponseBase, policy: IdempotencyPolicy) -> bool:
    """Prepare ``response`` for capture; True when it is complete now (not streamed)."""
    if getattr(response, "streaming", False):
        _capture_stream(running, response, policy)
        return False
    return True


def _recorded(response: HttpResponseBase, policy: IdempotencyPolicy) -> StoredResponse | None:
    recorder = ResponseRecorder(policy)
    recorder.start(response.status_code, _headers_of(response))
    recorder.add_body(cast(HttpResponse, response).content, more=False)
    return recorder.stored_response()


def _capture_stream(running: _Running, response: Any, policy: IdempotencyPolicy) -> None:
    recorder = ResponseRecorder(policy)
    recorder.start(response.status_code, _headers_of(response))
    # Django hands a FileResponse's file to wsgi.file_wrapper when the server offers one,
    # past any capture: serve it through streaming_content instead (Django 5's setter below
    # drops it too; this does not rely on that).
    if getattr(response, "file_to_stream", None) is not None:
        response.file_to_stream = None
    content = response.streaming_content
    if response.is_async:
        response.streaming_content = _astream(running, recorder, content)
    else:
        response.streaming_content = _stream(running, recorder, content)


def _stream(
    running: _Running, recorder: ResponseRecorder, chunks: Iterator[bytes]
) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            recorder.add_body(chunk, more=True)
            yield chunk
        recorder.add_body(b"", more=False)
        running.end(recorder.stored_response())
    finally:
        if not running.finished:  # the client went away, or the iterator raised
            running.end(None)


async def _astream(
    running: _Running, recorder: ResponseRecorder, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            recorder.add_body(chunk, more=True)
            yield chunk
        recorder.add_body(b"", more=False)
        await running.aend(recorder.stored_response())
    finally:
        if not running.finished:
            await running.aend(None)


# -- the middleware ----------------------------------------------------------------------------


@sync_and_async_middleware
class IdempotencyMiddleware:
    """Django middleware for the ``Idempotency-Key`` header; see the module docstring."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        config: Mapping[str, Any] = getattr(settings, "IDEMKIT", None) or {}
        unknown = set(config) - _SETTINGS
        if unknown:
            raise ImproperlyConfigured(f"settings.IDEMKIT has unknown keys {sorted(unknown)}")
        url = config.get("REDIS_URL")
        if not url:
            raise ImproperlyConfigured(
                "integrations.django.IdempotencyMiddleware needs settings.IDEMKIT['REDIS_URL'] "
                "(e.g. 'redis://localhost:6379/0')"
            )
        _check_order()
        self.policy = IdempotencyPolicy.from_options(**dict(config.get("OPTIONS") or {}))
        self.coverage = Coverage(
            self.policy.methods, config.get("REQUIRE_KEY", False), config.get("EXEMPT_PATHS", ())
        )
        observer = config.get("OBSERVER")
        if isinstance(observer, str):
            observer = import_string(observer)
        self.observer: Observer | None = observer
        self._url: str = url
        timeout = self.policy.store_timeout
        self._client_options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **dict(config.get("REDIS_OPTIONS") or {}),
        }
        self._sync_engine: SyncEngine | None = None
        self._exchanges: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HttpIdempotency] = (
            weakref.WeakKeyDictionary()
        )
        self._warned_cookies = False
        _instances.add(self)

    # -- engines: built on first use ----------------------------------------------------------

    @functools.cached_property
    def sync_engine(self) -> SyncEngine:
        client = redis.Redis.from_url(self._url, **self._client_options)
        return SyncEngine(SyncLeaseStore(client), self.policy, self.observer)

    def exchange(self) -> HttpIdempotency:
        """The exchange of the running event loop (an asyncio client belongs to one loop)."""
        loop = asyncio.get_running_loop()
        exchange = self._exchanges.get(loop)
        if exchange is None:
            client = aioredis.Redis.from_url(self._url, **self._client_options)
            exchange = HttpIdempotency(as_lease_store(client), self.policy, self.observer)
            exchange.client = client  # type: ignore[attr-defined]
            self._exchanges[loop] = exchange
        return exchange

    def event(self, clock: Stopwatch, outcome: str, request: HttpRequest) -> None:
        if self.observer is not None:
            emit(self.observer, clock.event("idempotency.request", outcome, route=_route(request)))

    # -- before the view: both modes ----------------------------------------------------------

    def _admit(
        self, request: HttpRequest
    ) -> tuple[str, bytes, dict[str, Any]] | HttpResponse | None:
        """The key, body and scope of a covered keyed request; a problem response; or None
        to pass the request through (not covered, or no key where none is required)."""
        required = self.coverage.required(request.method or "GET", request.path_info)
        if required is None:
            return None
        scope = request_scope(request)
        headers = scope["headers"]
        try:
            key = request_key(headers)
        except InvalidKeyError as exc:
            return self._refuse(problems.invalid_key(str(exc)), request)
        if key is None:
            return self._refuse(problems.missing_key(), request) if required else None
        limit = self.policy.max_body_bytes
        declared = declared_length_problem(headers, limit)
        if declared is not None:
            return self._refuse(declared, request)
        body = request.body
        if len(body) > limit:
            return self._refuse(problems.body_too_large(limit), request)
        return key, body, scope

    def _refuse(
        self, problem: Problem, request: HttpRequest, clock: Stopwatch | None = None
    ) -> HttpResponse:
        self.event(clock or Stopwatch(), problem_outcome(problem), request)
        return _problem_response(problem)

    # -- sync chain (WSGI, or sync middleware under ASGI) ---------------------------------------

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        admitted = self._admit(request)
        if admitted is None:
            return self.get_response(request)
        if isinstance(admitted, HttpResponse):
            return admitted
        key, body, scope = admitted
        engine = self.sync_engine
        clock = Stopwatch()
        _add_user(scope, getattr(request, "user", None))
        caller = identify_caller(self.policy, scope, engine.log)
        if isinstance(caller, Problem):
            return self._refuse(caller, request, clock)
        self._warn_cookies(caller, scope)
        record, fingerprint = engine.identify(scope, caller, key, body)
        sent = time.monotonic()
        try:
            claim = engine.claim(record, fingerprint)
        except StoreUnavailableError as exc:
            verdict = store_failure_verdict(exc, self.policy, engine.evicting, engine.log)
        else:
            verdict = claim_verdict(claim, self.policy, engine.log)
        if not verdict.execute:
            return self._answer(verdict, clock, request)
        _expose(request, LeaseContext(record, claim.token))
        running = _SyncRunning(
            self, request, record, claim.token, engine.renewal(record, claim.token, sent), clock
        )
        try:
            response = self.get_response(request)
        except BaseException:
            running.end(None)
            raise
        if getattr(request, _RAISED, False):
            running.end(None)
        elif _finish(running, response, self.policy):
            running.end(_recorded(response, self.policy))
        return response

    # -- async chain (ASGI) ---------------------------------------------------------------------

    async def __acall__(self, request: HttpRequest) -> Any:
        admitted = self._admit(request)
        if admitted is None:
            return await self.get_response(request)
        if isinstance(admitted, HttpResponse):
            return admitted
        key, body, scope = admitted
        _add_user(scope, await request.auser() if hasattr(request, "auser") else None)
        exchange = self.exchange()
        decision = await exchange.claim(scope, key, body)
        execution = decision.execution
        if execution is None:
            if decision.unguarded:
                return await self.get_response(request)
            if decision.stored is not None:
                return _replay_response(decision.stored)
            assert decision.problem is not None
            return _problem_response(decision.problem)
        _expose(request, LeaseContext(execution.record, execution.token))
        running = _AsyncRunning(execution, request, scope)
        try:
            response = await self.get_response(request)
        except asyncio.CancelledError:
            await execution.abort(cancelled=True)
            raise
        except BaseException:
            await execution.abort()
            raise
        if getattr(request, _RAISED, False):
            running.label()
            await execution.abort()
        elif _finish(running, response, self.policy):
            await running.aend(_recorded(response, self.policy))
        return response

    # -- answers ------------------------------------------------------------------------------

    def _answer(self, verdict: Verdict, clock: Stopwatch, request: HttpRequest) -> Any:
        self.event(clock, verdict.outcome, request)
        if verdict.unguarded:
            return self.get_response(request)
        if verdict.stored is not None:
            return _replay_response(verdict.stored)
        assert verdict.problem is not None
        return _problem_response(verdict.problem)

    def _warn_cookies(self, caller: str, scope: Mapping[str, Any]) -> None:
        if not self._warned_cookies:
            self._warned_cookies = warn_shared_namespace(caller, scope)

    async def aclose(self) -> None:
        """Close the asyncio client of the running loop (and forget it)."""
        exchange = self._exchanges.pop(asyncio.get_running_loop(), None)
        if exchange is not None:
            await exchange.client.aclose()  # type: ignore[attr-defined]


_instances: weakref.WeakSet[IdempotencyMiddleware] = weakref.WeakSet()


async def aclose_clients() -> None:
    """Close the asyncio Redis clients the Django middleware opened on the running loop:
    call it when an ASGI server shuts down (or at the end of an async test)."""
    for middleware in list(_instances):
        await middleware.aclose()


def _check_order() -> None:
    names = [m for m in getattr(settings, "MIDDLEWARE", ()) if isinstance(m, str)]
    ours = next((i for i, m in enumerate(names) if m == f"{__name__}.IdempotencyMiddleware"), None)
    auth = next((i for i, m in enumerate(names) if m == _AUTH_MIDDLEWARE), None)
    if ours is not None and auth is not None and auth > ours:
        raise ImproperlyConfigured(
            "put integrations.django.IdempotencyMiddleware after AuthenticationMiddleware in "
            "MIDDLEWARE: it scopes keys by request.user"
        )
