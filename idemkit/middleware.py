"""``IdempotencyMiddleware``: a pure ASGI middleware for the ``Idempotency-Key`` header.

Semantics follow the IETF httpapi draft "The Idempotency-Key HTTP Header Field" and Stripe's
public behaviour; README.md lists every option and the failure behaviour. A first execution
costs two Redis round trips (claim, then complete); a replay costs one.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable
from typing import Unpack, cast

import redis.asyncio as aioredis

from idemkit import problem as problems
from idemkit._types import ASGIApp, Message, Observer, Receive, Scope, Send
from idemkit.codec import StoredResponse, decode_response, encode_response
from idemkit.context import SCOPE_KEY, LeaseContext
from idemkit.engine import Engine, Renewal, replay_headers
from idemkit.errors import CodecError, ConfigurationError, InvalidKeyError, StoreUnavailableError
from idemkit.keys import key_from_headers
from idemkit.lease import BUSY, COMPLETED, LeaseStore
from idemkit.pipeline import PipelinedLeaseStore, can_pipeline
from idemkit.policy import IdempotencyPolicy, PolicyOptions
from idemkit.problem import Problem

__all__ = ["IdempotencyMiddleware", "as_lease_store"]

log = logging.getLogger("idemkit")

_KEY_HEADER = b"idempotency-key"


def as_lease_store(store: LeaseStore | aioredis.Redis | aioredis.RedisCluster) -> LeaseStore:
    if isinstance(store, LeaseStore):
        return store
    if can_pipeline(store):
        # Scripts of concurrent requests share writes and reads (see idemkit/pipeline.py).
        return PipelinedLeaseStore(cast(aioredis.Redis, store))
    if isinstance(store, aioredis.Redis | aioredis.RedisCluster):
        return LeaseStore(store)
    raise ConfigurationError(
        f"store must be a redis.asyncio client or an idemkit.LeaseStore, got {type(store).__name__}"
    )


def _compile_paths(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(parts)) if parts else None


class IdempotencyMiddleware:
    """Stores the final response of mutating requests under their ``Idempotency-Key`` and
    replays it to retries.

    ``require_key`` is ``True`` (every covered request must carry a key), ``False`` (requests
    without a key pass through) or glob patterns of paths that require one (``"/payments*"``).
    ``exempt_paths`` are glob patterns of paths the middleware never touches.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: LeaseStore | aioredis.Redis | aioredis.RedisCluster,
        require_key: bool | Iterable[str] = False,
        exempt_paths: Iterable[str] = (),
        observer: Observer | None = None,
        **options: Unpack[PolicyOptions],
    ) -> None:
        self.app = app
        self.policy = IdempotencyPolicy.from_options(**options)
        self.engine = Engine(as_lease_store(store), self.policy)
        self.store = self.engine.store
        if isinstance(require_key, str):
            raise ConfigurationError("require_key takes a list of path patterns, not one string")
        self._require_all = require_key is True
        self._required = None if isinstance(require_key, bool) else _compile_paths(require_key)
        self._exempt = _compile_paths(exempt_paths)
        self._observe = observer
        self._methods = self.policy.methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in self._methods:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self._exempt is not None and self._exempt.match(path):
            await self.app(scope, receive, send)
            return

        try:
            key = key_from_headers([v for n, v in scope["headers"] if n == _KEY_HEADER])
        except InvalidKeyError as exc:
            await self._reject(send, problems.invalid_key(str(exc)), "rejected")
            return
        if key is None:
            if self._require_all or (self._required is not None and self._required.match(path)):
                await self._reject(send, problems.missing_key(), "rejected")
                return
            await self.app(scope, receive, send)
            return

        body = await self._read_body(receive, send)
        if body is None:
            return
        await self._handle(scope, receive, send, key, body)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, key: str, body: bytes
    ) -> None:
        policy = self.policy
        record, fingerprint = self.engine.identify(scope, key, body)
        replay_receive = _ReplayReceive(body, receive)
        try:
            claim = await self.engine.claim(record, fingerprint)
        except StoreUnavailableError as exc:
            if policy.fail_open:
                log.warning("idemkit: store unavailable, serving without idempotency: %s", exc)
                self._emit("bypassed")
                await self.app(scope, replay_receive, send)
            else:
                log.warning("idemkit: store unavailable, answering 503: %s", exc)
                await self._reject(
                    send, problems.store_unavailable(policy.retry_after), "unavailable"
                )
            return

        if claim.outcome == COMPLETED:
            await self._replay(send, claim.result or b"")
            return
        problem = problems.for_claim(claim.outcome, policy.retry_after)
        if problem is None:  # claimed: this request runs the handler
            await self._execute(scope, replay_receive, send, record, claim.token)
        else:
            await self._reject(send, problem, "conflict" if claim.outcome == BUSY else "mismatch")

    async def _execute(
        self, scope: Scope, receive: Receive, send: Send, record: str, token: int
    ) -> None:
        engine = self.engine
        capture = _Capture(self.policy)
        renewal = Renewal(engine, record, token)
        # Handlers present this token to the resources they write (see idemkit.fence), so a
        # holder that outlived its lease cannot apply its side effect after a newer one.
        scope[SCOPE_KEY] = LeaseContext(record, token)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.body" and capture.status:
                if capture.add_body(message.get("body", b""), message.get("more_body", False)):
                    # The final body chunk: store before the client sees the end of the
                    # response, so a retry sent right after it is a replay, not a 409. A 5xx
                    # waits until the app returns: an unhandled exception must release.
                    if capture.status >= 500:
                        capture.held = message
                        return
                    renewal.stop()
                    await self._finish(record, token, capture)
            elif message["type"] == "http.response.start":
                capture.start(message)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            renewal.stop()
            if not capture.finished:
                capture.finished = True
                self._emit("released")
                await engine.finish(record, token, None)
            if capture.held is not None:
                await _send_quietly(send, capture.held)
            raise
        renewal.stop()
        if not capture.finished:
            await self._finish(record, token, capture)
        if capture.held is not None:
            await send(capture.held)

    async def _finish(self, record: str, token: int, capture: _Capture) -> None:
        capture.finished = True
        stored = capture.stored_response()
        if stored is None or stored.status in self.policy.release_statuses:
            self._emit("released")
            await self.engine.finish(record, token, None)
            return
        stored_ok = await self.engine.finish(record, token, encode_response(stored))
        if stored_ok:
            self._emit("executed")
        elif stored_ok is False:
            self._emit("fenced")
        else:
            self._emit("store_failed")

    async def _replay(self, send: Send, data: bytes) -> None:
        try:
            stored = decode_response(data)
        except CodecError as exc:
            log.error("idemkit: stored response unreadable: %s", exc)
            await self._reject(send, problems.unreadable(str(exc)), "rejected")
            return
        self._emit("replayed")
        await send(
            {
                "type": "http.response.start",
                "status": stored.status,
                "headers": replay_headers(stored),
            }
        )
        await send({"type": "http.response.body", "body": stored.body})

    async def _read_body(self, receive: Receive, send: Send) -> bytes | None:
        limit = self.policy.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None  # client gone before anything was claimed: nothing to undo
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    await self._reject(send, problems.body_too_large(limit), "rejected")
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    async def _reject(self, send: Send, problem: Problem, event: str) -> None:
        self._emit(event)
        body = problem.body()
        await send(
            {
                "type": "http.response.start",
                "status": problem.status,
                "headers": problem.headers(body),
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _emit(self, event: str) -> None:
        if self._observe is not None:
            try:
                self._observe(event)
            except Exception:  # an observer bug must not break requests
                log.exception("idemkit: observer failed")


class _ReplayReceive:
    """Hands the app the body the middleware already read, then the real channel (which
    reports ``http.disconnect`` when the client goes away)."""

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


class _Capture:
    """The response as it streams past, kept up to ``max_response_bytes``."""

    __slots__ = (
        "chunks",
        "complete",
        "excluded",
        "finished",
        "headers",
        "held",
        "limit",
        "overflow",
        "size",
        "status",
    )

    def __init__(self, policy: IdempotencyPolicy) -> None:
        self.limit = policy.max_response_bytes
        self.excluded = policy.replay_exclude_headers
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False
        self.complete = False
        self.finished = False
        self.held: Message | None = None

    def start(self, message: Message) -> None:
        self.status = int(message["status"])
        excluded = self.excluded
        self.headers = [
            (n.lower(), v) for n, v in message.get("headers", ()) if n.lower() not in excluded
        ]

    def add_body(self, chunk: bytes, more: bool) -> bool:
        """Record a body chunk; True when it was the last one."""
        if chunk and not self.overflow:
            self.size += len(chunk)
            if self.size > self.limit:
                self.overflow = True
                self.chunks.clear()
            else:
                self.chunks.append(chunk)
        if not more:
            self.complete = True
        return not more

    def stored_response(self) -> StoredResponse | None:
        if not self.complete:
            return None  # the app returned without finishing a response: nothing to replay
        if self.overflow:
            return StoredResponse(self.status, self.headers, b"", body_omitted=True)
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return StoredResponse(self.status, self.headers, body)


async def _send_quietly(send: Send, message: Message) -> None:
    try:
        await send(message)
    except Exception:  # the connection may already be gone while an exception propagates
        log.debug("idemkit: could not send the held response", exc_info=True)
