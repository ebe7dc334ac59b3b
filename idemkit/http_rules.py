"""The HTTP rules of idempotency, apart from any server interface.

:mod:`idemkit.exchange` applies them to ASGI messages; the Django middleware
(``integrations.django``) applies them to Django's request and response objects under WSGI
and ASGI. Both take every decision here, so a rule changed here changes everywhere:

- :func:`request_key`: the key of a request, from its ``Idempotency-Key`` values;
- :func:`declared_length_problem`: a ``Content-Length`` that is malformed or over the limit;
- :func:`identify_caller`: whose namespace the key lives in (a 500 problem when the
  configured resolver fails: never a silent shared namespace);
- :func:`claim_verdict` and :func:`store_failure_verdict`: what a claim (or a store that
  failed to answer it) means for the request: run it, replay, refuse, or serve unguarded;
- :class:`ResponseRecorder`: the response kept for replay as it streams past, within
  ``max_response_bytes`` (beyond: status and headers only, ``body_omitted``);
- :func:`completion_record`: what a finished response leaves behind: the encoded response,
  or None to release the key (no complete response, or a status in ``release_statuses``);
- :func:`replay_headers`: the headers a replay carries.

A request is described by an ASGI-like mapping (``method``, ``path``, ``query_string``,
``headers`` as lower-case byte pairs, optionally ``user``), which is what an ASGI scope is
and what the Django middleware builds from a Django request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from idemkit import problem as problems
from idemkit.codec import StoredResponse, decode_response, encode_response
from idemkit.errors import CodecError, EvictingStoreError, StoreUnavailableError
from idemkit.keys import key_from_headers
from idemkit.lease import BUSY, CLAIMED, COMPLETED, Claim
from idemkit.policy import IdempotencyPolicy
from idemkit.problem import Problem
from idemkit.ratelog import RateLimitedLog
from idemkit.scope import ANONYMOUS

__all__ = [
    "KEY_HEADER",
    "ResponseRecorder",
    "Verdict",
    "claim_verdict",
    "completion_record",
    "declared_length_problem",
    "identify_caller",
    "replay_headers",
    "request_key",
    "store_failure_verdict",
]

log = logging.getLogger("idemkit")

KEY_HEADER: Final = b"idempotency-key"
NO_BODY_STATUSES: Final = frozenset({204, 304})


def request_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The request's key; None without one; :class:`InvalidKeyError` when malformed."""
    return key_from_headers([v for n, v in headers if n == KEY_HEADER])


def declared_length_problem(headers: Iterable[tuple[bytes, bytes]], limit: int) -> Problem | None:
    """A 400 for a ``Content-Length`` that is not a number, a 413 for one over ``limit``."""
    for name, value in headers:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                return problems.invalid_length()
            if declared > limit:
                return problems.body_too_large(limit)
    return None


def identify_caller(
    policy: IdempotencyPolicy, scope: Mapping[str, Any], ratelog: RateLimitedLog
) -> str | Problem:
    """The caller's namespace from ``policy.caller``; a 500 problem if it cannot be told."""
    try:
        caller = policy.caller(scope)
        if not isinstance(caller, str) or not caller:
            raise TypeError(f"caller= returned {caller!r}, not a non-empty str")
    except Exception as exc:
        cause = f"{type(exc).__name__}: {exc}"
        ratelog.log(logging.ERROR, "caller", f"cannot identify the caller: {cause}")
        return problems.caller_unidentified(cause)
    return caller


def warn_shared_namespace(caller: str, scope: Mapping[str, Any]) -> bool:
    """Warn (once per caller of this function; True when it did) that a keyed request with
    cookies landed in the anonymous namespace: cookies may identify users idemkit cannot see."""
    if caller != ANONYMOUS or not any(name == b"cookie" for name, _ in scope["headers"]):
        return False
    log.warning(
        "idemkit: a keyed request carries cookies but no credentials idemkit knows, so "
        "it shares the anonymous namespace with every such request; if cookies "
        "identify your users, pass caller=... (or put the user in scope['user'])",
        extra={"idemkit": "anonymous-cookies"},
    )
    return True


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a claim means for the request. ``outcome`` is the event outcome (``claimed``,
    ``replayed``, ``conflict``, ``mismatch``, ``rejected``, ``unavailable``, ``bypassed``);
    ``stored`` is set for a replay, ``problem`` for an answer of idemkit's own."""

    outcome: str
    stored: StoredResponse | None = None
    problem: Problem | None = None

    @property
    def execute(self) -> bool:
        """The request holds the lease: run it."""
        return self.outcome == "claimed"

    @property
    def unguarded(self) -> bool:
        """Run the handler without idempotency (``fail_open`` with the store down)."""
        return self.outcome == "bypassed"


def claim_verdict(claim: Claim, policy: IdempotencyPolicy, ratelog: RateLimitedLog) -> Verdict:
    """The verdict of a claim the store answered."""
    if claim.outcome == CLAIMED:
        return Verdict("claimed")
    if claim.outcome == COMPLETED:
        try:
            stored = decode_response(claim.result or b"")
        except CodecError as exc:
            ratelog.log(logging.ERROR, "unreadable", f"stored response unreadable: {exc}")
            return Verdict("rejected", problem=problems.unreadable(str(exc)))
        return Verdict("replayed", stored=stored)
    refusal = problems.for_claim(claim.outcome, policy.retry_after)
    assert refusal is not None  # BUSY or MISMATCH
    return Verdict("conflict" if claim.outcome == BUSY else "mismatch", problem=refusal)


def store_failure_verdict(
    exc: StoreUnavailableError,
    policy: IdempotencyPolicy,
    evicting: str | None,
    ratelog: RateLimitedLog,
) -> Verdict:
    """The verdict when the store could not answer the claim (or refuses to: it evicts)."""
    if isinstance(exc, EvictingStoreError):
        if policy.fail_open:
            return Verdict("bypassed")
        problem = problems.store_evicts(evicting or "?", policy.retry_after)
        return Verdict("unavailable", problem=problem)
    if policy.fail_open:
        ratelog.log(logging.WARNING, "bypassed", f"store unavailable, serving: {exc}")
        return Verdict("bypassed")
    ratelog.log(logging.WARNING, "unavailable", f"store unavailable, answering 503: {exc}")
    return Verdict("unavailable", problem=problems.store_unavailable(policy.retry_after))


def problem_outcome(problem: Problem) -> str:
    """The event outcome of a problem answered by idemkit."""
    return "unavailable" if problem.status == 503 else "rejected"


def completion_record(stored: StoredResponse | None, policy: IdempotencyPolicy) -> bytes | None:
    """What a finished request leaves in its record: the encoded response to replay, or None
    to release the key (no complete response, or a status in ``release_statuses``)."""
    if stored is None or stored.status in policy.release_statuses:
        return None
    return encode_response(stored)


def replay_headers(stored: StoredResponse) -> list[tuple[bytes, bytes]]:
    """Headers of a replayed response: the stored ones, a fresh length and the replay marks.

    Responses that never carry a body (1xx, 204, 304) get no ``Content-Length``, as the
    original had none.
    """
    headers = list(stored.headers)
    if not (stored.status < 200 or stored.status in NO_BODY_STATUSES):
        headers.append((b"content-length", str(len(stored.body)).encode()))
    headers.append((b"idempotent-replayed", b"true"))
    if stored.body_omitted:
        headers.append((b"idempotent-body-omitted", b"true"))
    return headers


class ResponseRecorder:
    """The response as it streams past, kept up to ``max_response_bytes``.

    :meth:`start` with the status and headers, then :meth:`add_body` per chunk (or
    :meth:`omit_body` when the body cannot be seen); :meth:`stored_response` is the response
    to replay once :attr:`complete`.
    """

    __slots__ = ("chunks", "complete", "excluded", "headers", "limit", "overflow", "size", "status")

    def __init__(self, policy: IdempotencyPolicy) -> None:
        self.limit = policy.max_response_bytes
        self.excluded = policy.replay_exclude_headers
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False
        self.complete = False

    def start(self, status: int, headers: Iterable[Sequence[bytes]]) -> None:
        """The response's status and headers; the ones never replayed are dropped here."""
        self.status = int(status)
        excluded = self.excluded
        self.headers = [
            (name, value)
            for name, value in ((bytes(n).lower(), bytes(v)) for n, v in headers)
            if name not in excluded
        ]

    def add_body(self, chunk: bytes, more: bool) -> None:
        if chunk and not self.overflow:
            self.keep(bytes(chunk))
        if not more:
            self.complete = True

    def keep(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.omit_body()
        else:
            self.chunks.append(chunk)

    def omit_body(self) -> None:
        """Keep status and headers only: the body is too large, or cannot be read back."""
        self.overflow = True
        self.chunks.clear()

    def stored_response(self) -> StoredResponse | None:
        if not self.complete:
            return None  # the app returned without finishing a response: nothing to replay
        if self.overflow:
            return StoredResponse(self.status, self.headers, b"", body_omitted=True)
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return StoredResponse(self.status, self.headers, body)
