"""The one capture and replay path for HTTP, shared by the middleware and the decorator.

An :class:`HttpIdempotency` takes a keyed request through four steps, each a method here:

1. :meth:`~HttpIdempotency.request_key` and :meth:`~HttpIdempotency.read_body`: the key
   (400 when malformed) and the body, read in chunks and refused with 413 before more than
   ``max_body_bytes`` is buffered, because the fingerprint covers it;
2. :meth:`~HttpIdempotency.claim`: one claim against the lease store; the answer is a
   replay, a problem (409, 422, 500, 503), a bypass (``fail_open``) or an
   :class:`Execution` that holds the lease;
3. :meth:`Execution.run`: the handler's response is captured at the ASGI level as it
   streams to the client, whatever produced it (a returned response, an exception rendered
   by the framework, a streamed body, a file sent with ``pathsend``); the final body
   chunk waits until the response is stored, so a retry sent right after it is a replay;
4. :meth:`~HttpIdempotency.respond` sends a replay or a problem.

The middleware runs the downstream app inside :meth:`Execution.run`. The decorator, called
by the framework with the handler's arguments, runs the handler itself and hands the
resulting response (or the framework's rendering of its exception) to :meth:`Execution.run`
when the framework sends it; see :mod:`idemkit.handlers`. Both therefore store, release and
replay by the same rules, in the same code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Final

from idemkit import problem as problems
from idemkit._types import ASGIApp, Message, Receive, Scope, Send
from idemkit.codec import StoredResponse
from idemkit.context import SCOPE_KEY, LeaseContext
from idemkit.engine import Engine, Renewal, outcome_of
from idemkit.errors import InvalidKeyError, StoreUnavailableError
from idemkit.http_rules import (
    ResponseRecorder,
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
from idemkit.lease import Completion, LeaseStore
from idemkit.observe import Event, Observer, Stopwatch, emit
from idemkit.policy import IdempotencyPolicy
from idemkit.problem import Problem

__all__ = [
    "BodyReader",
    "Decision",
    "Execution",
    "HttpIdempotency",
    "ReplayReceive",
    "replay_headers",
    "route_template",
    "send_problem",
]

log = logging.getLogger("idemkit")


_FILE_MESSAGES: Final = frozenset({"http.response.pathsend", "http.response.zerocopysend"})


def route_template(scope: Scope) -> str | None:
    """The route template of a request once the framework routed it (``/orders/{id}``), for
    metric labels; None before routing (replays, problems answered by the middleware)."""
    route = scope.get("route")
    for attribute in ("path_format", "path"):
        value = getattr(route, attribute, None)
        if isinstance(value, str):
            return value
    template = scope.get("path_template")  # Litestar
    return template if isinstance(template, str) else None


class ReplayReceive:
    """Hands the app the body that was already read, then the real channel (which reports
    ``http.disconnect`` when the client goes away)."""

    __slots__ = ("_body", "_receive")

    def __init__(self, body: bytes, receive: Receive) -> None:
        self._body: bytes | None = body
        self._receive = receive

    async def __call__(self) -> Message:
        body = self._body
        if body is not None:
            self._body = None
            return {"type": "http.request", "body": body, "more_body": False}
        return await self._receive()


class Decision:
    """What became of one covered request before its handler ran.

    Exactly one of these holds: ``execution`` (this request holds the lease: run it),
    ``stored`` (replay it), ``problem`` (answer it), ``unguarded`` (run the handler without
    idempotency: no key where none is required, or ``fail_open`` with the store down), or
    ``gone`` (the client left while its body was read; nothing was claimed). ``body`` is the
    request body once it was read.
    """

    __slots__ = ("body", "execution", "gone", "problem", "stored", "unguarded")

    def __init__(
        self,
        *,
        body: bytes | None = None,
        execution: Execution | None = None,
        problem: Problem | None = None,
        stored: StoredResponse | None = None,
        unguarded: bool = False,
        gone: bool = False,
    ) -> None:
        self.body = body
        self.execution = execution
        self.problem = problem
        self.stored = stored
        self.unguarded = unguarded
        self.gone = gone


BodyReader = Callable[[], Awaitable["bytes | Problem | None"]]


class HttpIdempotency:
    """Idempotency-Key semantics for HTTP requests over one lease store and policy."""

    def __init__(
        self, store: LeaseStore, policy: IdempotencyPolicy, observer: Observer | None = None
    ) -> None:
        self.engine = Engine(store, policy, observer)
        self.policy = policy
        self.observer = observer
        self._warned_cookies = False
        self._log = self.engine.log

    # -- request side ---------------------------------------------------------------------

    @staticmethod
    def request_key(scope: Scope) -> str | None:
        """The request's key; None without one; :class:`InvalidKeyError` when malformed."""
        return request_key(scope["headers"])

    async def read_body(self, scope: Scope, receive: Receive) -> bytes | Problem | None:
        """The whole request body, or a 413 problem as soon as it is known to be too large
        (from ``Content-Length`` before reading, else after the chunk that crossed the limit),
        or None if the client disconnected."""
        limit = self.policy.max_body_bytes
        declared = declared_length_problem(scope["headers"], limit)
        if declared is not None:
            return declared
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    return problems.body_too_large(limit)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def claim(self, scope: Scope, key: str, body: bytes) -> Decision:
        """One claim of ``key`` for this request and body; see :class:`Decision`."""
        policy = self.policy
        clock = Stopwatch()
        caller = identify_caller(policy, scope, self._log)
        if isinstance(caller, Problem):
            return self._problem(caller, clock, scope)
        if not self._warned_cookies:
            self._warned_cookies = warn_shared_namespace(caller, scope)
        record, fingerprint = self.engine.identify(scope, caller, key, body)
        sent = time.monotonic()
        try:
            claim = await self.engine.claim(record, fingerprint)
        except StoreUnavailableError as exc:
            verdict = store_failure_verdict(exc, policy, self.engine.evicting, self._log)
        else:
            verdict = claim_verdict(claim, policy, self._log)
        if verdict.execute:
            return Decision(execution=Execution(self, scope, record, claim.token, clock, sent))
        self._event(clock, verdict.outcome, scope)
        return Decision(stored=verdict.stored, problem=verdict.problem, unguarded=verdict.unguarded)

    async def admit(self, scope: Scope, *, required: bool, read_body: BodyReader) -> Decision:
        """Key, body and claim of one covered request: everything before its handler runs."""
        try:
            key = self.request_key(scope)
        except InvalidKeyError as exc:
            return self._rejected(problems.invalid_key(str(exc)), scope)
        if key is None:
            if required:
                return self._rejected(problems.missing_key(), scope)
            return Decision(unguarded=True)
        body = await read_body()
        if body is None:
            return Decision(gone=True)
        if not isinstance(body, bytes):
            return self._rejected(body, scope)
        decision = await self.claim(scope, key, body)
        decision.body = body
        return decision

    async def serve(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        required: bool,
        raised: Callable[[], bool] | None = None,
    ) -> None:
        """The whole exchange around ``app`` for one covered HTTP request: admit it, then run
        and capture it, replay, or answer a problem (``raised``: see :meth:`Execution.run`)."""

        async def read_body() -> bytes | Problem | None:
            return await self.read_body(scope, receive)

        decision = await self.admit(scope, required=required, read_body=read_body)
        if decision.gone:
            return
        if decision.body is not None:
            receive = ReplayReceive(decision.body, receive)
        if decision.execution is not None:
            await decision.execution.run(app, scope, receive, send, raised)
        elif decision.unguarded:
            await app(scope, receive, send)
        else:
            await self.respond(decision, send)

    # -- response side --------------------------------------------------------------------

    async def respond(self, decision: Decision, send: Send) -> None:
        """Send a replay or a problem (nothing for the other decisions)."""
        if decision.stored is not None:
            stored = decision.stored
            await send(
                {
                    "type": "http.response.start",
                    "status": stored.status,
                    "headers": replay_headers(stored),
                }
            )
            await send({"type": "http.response.body", "body": stored.body})
        elif decision.problem is not None:
            await send_problem(send, decision.problem)

    # -- events ---------------------------------------------------------------------------

    def _rejected(self, problem: Problem, scope: Scope) -> Decision:
        """A problem found before any claim (bad key, missing key, body too large)."""
        self._event(Stopwatch(), "rejected", scope)
        return Decision(problem=problem)

    def _problem(self, problem: Problem, clock: Stopwatch, scope: Scope) -> Decision:
        self._event(clock, problem_outcome(problem), scope)
        return Decision(problem=problem)

    def _event(self, clock: Stopwatch, outcome: str, scope: Scope) -> None:
        if self.observer is not None:
            event = clock.event("idempotency.request", outcome, route=route_template(scope))
            emit(self.observer, event)


class Execution:
    """One request running under a claimed lease: captures its response and stores it.

    Created by :meth:`HttpIdempotency.claim`; the lease is renewed from then on. Exactly one
    of :meth:`run` (which stores or releases when the response is done) or :meth:`abort`
    (release: the handler raised or was cancelled before a response existed) ends it. An
    execution that is dropped without either (a framework that never sent the response) is
    released when it is garbage-collected, so the key is not stuck until the lease ends.
    """

    def __init__(
        self,
        exchange: HttpIdempotency,
        scope: Scope,
        record: str,
        token: int,
        clock: Stopwatch,
        granted_at: float,
    ) -> None:
        self._exchange = exchange
        self._scope = scope
        self.record = record
        self.token = token
        self._clock = clock
        self._renewal = Renewal(exchange.engine, record, token, granted_at)
        self.finished = False
        # Handlers present this token to the resources they write (see idemkit.fence), so a
        # holder that outlived its lease cannot apply its side effect after a newer one.
        scope[SCOPE_KEY] = LeaseContext(record, token)

    def guard(self, owner: object) -> None:
        """Release the key if ``owner`` (the response object a framework was handed) is
        collected before :meth:`run` started."""
        weakref.finalize(owner, _release_orphan, weakref.ref(self))

    async def run(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        raised: Callable[[], bool] | None = None,
    ) -> None:
        """Run ``app`` (the handler, or a response that is already built) with its messages
        captured; store the response when complete, release on an exception.

        ``raised`` is for frameworks that turn every handler exception into a response
        inside ``app`` (Litestar): it tells, once ``app`` returned, whether the handler
        raised an exception the framework has no handler for, which releases the key as an
        exception escaping ``app`` would.
        """
        capture = ResponseRecorder(self._exchange.policy)

        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                capture.start(message["status"], message.get("headers", ()))
            elif capture.status and not capture.complete:
                if kind == "http.response.body":
                    capture.add_body(message.get("body", b""), message.get("more_body", False))
                elif kind in _FILE_MESSAGES:
                    _add_file(capture, message)
                if capture.complete and capture.status < 500 and not self.finished:
                    # Store before the client sees the end of the response, so a retry sent
                    # right after it is a replay, not a 409. A 5xx goes out at once: whether
                    # it is stored or released is decided when the app returns (an unhandled
                    # exception after it must release).
                    await self.complete(capture.stored_response())
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        except BaseException as exc:
            if not self.finished:
                await self._release(
                    "cancelled" if isinstance(exc, asyncio.CancelledError) else "released"
                )
            raise
        if not self.finished:
            if raised is not None and raised():
                await self._release("released")
            else:
                await self.complete(capture.stored_response())

    async def abort(self, cancelled: bool = False) -> None:
        """Release the key: the handler raised (or was cancelled) before it had a response."""
        if not self.finished:
            await self._release("cancelled" if cancelled else "released")

    async def complete(self, stored: StoredResponse | None) -> None:
        """End the execution with the response it produced (None: it produced none): store
        it for replay, or release the key, by :func:`idemkit.http_rules.completion_record`."""
        if self.finished:
            return
        record = completion_record(stored, self._exchange.policy)
        if record is None:
            await self._release("released")
            return
        self.finished = True
        self._renewal.stop()
        done = await self._exchange.engine.finish(
            self.record, self.token, record, self._renewal.valid_until, self._late
        )
        self._emit(outcome_of(done))

    def _late(self, done: Completion | None) -> None:
        """How a completion retried in the background ended (its own event, so request
        counts stay one per request)."""
        exchange = self._exchange
        if exchange.observer is not None:
            event = Event(
                "idempotency.completion", outcome_of(done), route=route_template(self._scope)
            )
            emit(exchange.observer, event)

    async def _release(self, outcome: str) -> None:
        self.finished = True
        self._renewal.stop()
        self._emit(outcome)
        await self._exchange.engine.finish(self.record, self.token, None)

    def _emit(self, outcome: str) -> None:
        self._exchange._event(self._clock, outcome, self._scope)


def _release_orphan(ref: weakref.ref[Execution]) -> None:
    execution = ref()
    if execution is None or execution.finished:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # collected outside the loop (shutdown): the lease ends on its own
        return
    task = loop.create_task(execution.abort())
    _orphans.add(task)
    task.add_done_callback(_orphans.discard)


_orphans: set[asyncio.Task[None]] = set()


async def send_problem(send: Send, problem: Problem) -> None:
    body = problem.body()
    await send(
        {"type": "http.response.start", "status": problem.status, "headers": problem.headers(body)}
    )
    await send({"type": "http.response.body", "body": body})


def _add_file(capture: ResponseRecorder, message: Message) -> None:
    """``http.response.pathsend`` (a whole file) or ``http.response.zerocopysend``."""
    if message["type"] == "http.response.pathsend":
        _keep_file(capture, message["path"], 0, None)
        capture.complete = True
        return
    _keep_file(capture, message["file"], message.get("offset", 0) or 0, message.get("count"))
    if not message.get("more_body", False):
        capture.complete = True


def _keep_file(capture: ResponseRecorder, source: Any, offset: int, count: int | None) -> None:
    if capture.overflow:
        return
    try:
        if isinstance(source, int):
            size = os.fstat(source).st_size - offset if count is None else count
            if capture.size + size > capture.limit:
                capture.omit_body()
                return
            capture.keep(os.pread(source, size, offset))
            return
        size = os.path.getsize(source)
        if capture.size + size > capture.limit:
            capture.omit_body()
            return
        with open(source, "rb") as file:
            capture.keep(file.read(size))
    except OSError as exc:  # the body cannot be read back: replay status and headers only
        log.warning("idemkit: cannot read the file of a response to store it: %s", exc)
        capture.omit_body()
