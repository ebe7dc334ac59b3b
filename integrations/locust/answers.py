"""What one attempt got back, and how two answers for the same key are compared.

Replays must reproduce the first answer: same status, same body, same listed headers. Some
parts legitimately differ between a first execution and its replay (a server timestamp, the
worker's pid): :class:`AnswerRules` names them. Comparison keeps only a digest and, for
small JSON bodies, the flattened leaves needed to say *which* fields differ; it never keeps
or prints the bodies themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from idemkit.errors import ConfigurationError

__all__ = [
    "ABANDONED",
    "DISCONNECTED",
    "EXECUTED",
    "OUTCOMES",
    "REPLAYED",
    "TIMEOUT",
    "Answer",
    "AnswerRules",
    "Shape",
]

EXECUTED: Final = "executed"
REPLAYED: Final = "replayed"
TIMEOUT: Final = "timeout"
DISCONNECTED: Final = "disconnected"
ABANDONED: Final = "abandoned"
# Every attempt lands in exactly one of these, in this (table) order.
OUTCOMES: Final = (
    EXECUTED,
    REPLAYED,
    "409",
    "422",
    "429",
    "503",
    "4xx",
    "5xx",
    "other",
    TIMEOUT,
    DISCONNECTED,
    ABANDONED,
)

_LEAVES_UP_TO = 4096  # bytes of JSON body for which the differing fields can be named


@dataclass(frozen=True, slots=True)
class Answer:
    """One attempt's result. ``status`` 0: no answer (``error`` says why)."""

    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes = b""
    error: str | None = None  # TIMEOUT, DISCONNECTED or ABANDONED when status is 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Shape:
    """What must be identical across answers for one key, reduced to comparable parts."""

    status: int
    headers: tuple[tuple[str, str], ...]
    digest: str
    leaves: Mapping[str, str] | None  # flattened JSON body, when small enough to explain

    def differences(self, other: Shape) -> str:
        """A short, body-free explanation of how ``other`` differs (empty if it does not)."""
        parts: list[str] = []
        if self.status != other.status:
            parts.append(f"status {self.status} vs {other.status}")
        for (name, mine), (_, theirs) in zip(self.headers, other.headers, strict=True):
            if mine != theirs:
                parts.append(f"header {name}")
        if self.digest != other.digest:
            if self.leaves is not None and other.leaves is not None:
                fields = sorted(
                    k
                    for k in self.leaves.keys() | other.leaves.keys()
                    if self.leaves.get(k) != other.leaves.get(k)
                )
                shown = ", ".join(fields[:6]) + (", ..." if len(fields) > 6 else "")
                parts.append(f"body fields {shown}")
            else:
                parts.append("body")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class AnswerRules:
    """How answers are read and compared.

    ``ignore_fields``: dotted JSON paths (``"served_at"``, ``"meta.trace"``) that may differ
    between a first answer and its replays. ``compare_headers``: response headers that must be
    identical too. ``replay_header``: the header a service sets on replays (``None`` if it
    marks none: then "executed twice" cannot be told from the client side).
    ``problem_prefix``: problem+json ``type`` prefix of the middleware's own answers, so a
    middleware 5xx is told from a handler's stored 5xx. ``fail_on_5xx``: count every 5xx
    other than a retried 503 as a violation (for services whose handlers never answer 5xx).
    """

    ignore_fields: tuple[str, ...] = ()
    compare_headers: tuple[str, ...] = ("content-type",)
    replay_header: str | None = "idempotent-replayed"
    problem_prefix: str | None = "urn:idemkit:"
    fail_on_5xx: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.ignore_fields, str) or isinstance(self.compare_headers, str):
            raise ConfigurationError(
                "AnswerRules: ignore_fields and compare_headers take a tuple of names, "
                "not one string"
            )
        object.__setattr__(self, "ignore_fields", tuple(self.ignore_fields))
        object.__setattr__(
            self, "compare_headers", tuple(sorted(h.lower() for h in self.compare_headers))
        )
        if self.replay_header is not None:
            object.__setattr__(self, "replay_header", self.replay_header.lower())

    def replayed(self, answer: Answer) -> bool:
        if self.replay_header is None:
            return False
        return answer.headers.get(self.replay_header, "").strip().lower() == "true"

    def problem_type(self, answer: Answer) -> str | None:
        """The problem+json ``type`` when the middleware itself answered, else None."""
        if self.problem_prefix is None:
            return None
        if "problem+json" not in answer.headers.get("content-type", ""):
            return None
        doc = answer.json()
        kind = doc.get("type") if isinstance(doc, dict) else None
        return kind if isinstance(kind, str) and kind.startswith(self.problem_prefix) else None

    def outcome(self, answer: Answer) -> str:
        """The column of the outcome table this attempt belongs to."""
        if answer.status == 0:
            return answer.error or DISCONNECTED
        if self.replayed(answer):
            return REPLAYED
        if answer.ok:
            return EXECUTED
        if answer.status in (409, 422, 429, 503):
            return str(answer.status)
        if 400 <= answer.status < 500:
            return "4xx"
        if answer.status >= 500:
            return "5xx"
        return "other"

    def shape(self, answer: Answer) -> Shape:
        headers = tuple((h, answer.headers.get(h, "")) for h in self.compare_headers)
        doc = answer.json()
        if doc is None:
            digest = hashlib.sha256(answer.body).hexdigest()
            return Shape(answer.status, headers, digest, None)
        for path in self.ignore_fields:
            doc = _without(doc, path.split("."))
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        leaves = _flatten(doc) if len(canonical) <= _LEAVES_UP_TO else None
        return Shape(answer.status, headers, digest, leaves)


def _without(doc: Any, path: list[str]) -> Any:
    if not path:
        return doc
    head, rest = path[0], path[1:]
    if isinstance(doc, dict) and head in doc:
        if not rest:
            return {k: v for k, v in doc.items() if k != head}
        return {**doc, head: _without(doc[head], rest)}
    if isinstance(doc, list) and head.isdigit() and int(head) < len(doc):
        index = int(head)
        if not rest:
            return doc[:index] + doc[index + 1 :]
        return [*doc[:index], _without(doc[index], rest), *doc[index + 1 :]]
    return doc


def _flatten(doc: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(doc, dict) and doc:
        out: dict[str, str] = {}
        for key, value in doc.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(doc, list) and doc:
        out = {}
        for index, value in enumerate(doc):
            out.update(_flatten(value, f"{prefix}{index}."))
        return out
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
    return {prefix.rstrip(".") or "(body)": digest}
