"""The user's own routes and body factories, and the mix of retry stories run against them.

A :class:`Route` says how to build one logical request (method, path template, body
factory); every operation on it gets a fresh ``Idempotency-Key``. A :class:`Mix` says how
often an operation is also one of the stories a careful client lives through: concurrent
duplicates, a first attempt abandoned half-way, a late retry of a completed key, and the
same key reused for a different body.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from idemkit.errors import ConfigurationError
from integrations.locust.answers import AnswerRules

__all__ = ["Mix", "Plan", "Prepared", "Route"]

BodyFactory = Callable[[], Any]
ParamsFactory = Callable[[], Mapping[str, object]]


@dataclass(frozen=True, slots=True)
class Plan:
    """Which stories one operation runs (drawn from a :class:`Mix`)."""

    duplicates: bool = False
    abandon: bool = False
    late_retry: bool = False
    reuse: bool = False


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares (0..1) of operations that run each story besides the plain retrying request.

    ``duplicates``: ``duplicate_count`` concurrent attempts with the same key and body.
    ``abandon``: the first attempt is given up after ``Route.abandon_after`` seconds (made
    slow with ``Route.slow_headers`` where the service supports it), then retried.
    ``late_retry``: after an acknowledged answer, the same request again up to
    ``late_delay`` seconds later; it must get the same answer. ``reuse``: after an
    acknowledged answer, the same key with a different body; it must get 422.
    """

    duplicates: float = 0.1
    abandon: float = 0.1
    late_retry: float = 0.1
    reuse: float = 0.1
    duplicate_count: int = 3
    late_delay: float = 0.5

    def __post_init__(self) -> None:
        for name in ("duplicates", "abandon", "late_retry", "reuse"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ConfigurationError(f"Mix.{name} is a share between 0 and 1, got {share!r}")
        if not 2 <= self.duplicate_count <= 50:
            raise ConfigurationError("Mix.duplicate_count must be 2..50 concurrent attempts")
        if self.late_delay < 0:
            raise ConfigurationError("Mix.late_delay must be >= 0 seconds")

    def draw(self, rng: random.Random) -> Plan:
        duplicates = rng.random() < self.duplicates
        return Plan(
            duplicates=duplicates,
            # An abandoned attempt among concurrent duplicates would only blur both stories.
            abandon=not duplicates and rng.random() < self.abandon,
            late_retry=rng.random() < self.late_retry,
            reuse=rng.random() < self.reuse,
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    """One logical request, built once and sent unchanged by every attempt."""

    path: str
    body: bytes
    document: Any  # the JSON value of the body, or None for a raw body


@dataclass(frozen=True, slots=True)
class Route:
    """A mutating endpoint of the service under test.

    ``path`` may hold ``{placeholders}`` filled from ``params()``; the template (not the
    filled path) names the Locust statistics row unless ``name`` is given. ``body()``
    returns a JSON value (sent as JSON) or ``bytes`` (sent as they are, with
    ``content_type``). ``headers`` go with every attempt; ``slow_headers`` only with a
    deliberately abandoned one. ``reuse_body`` turns a body into a *different* one for the
    key-reuse story (default: one extra JSON field).
    """

    method: str
    path: str
    body: BodyFactory | None = None
    params: ParamsFactory | None = None
    name: str | None = None
    weight: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)
    slow_headers: Mapping[str, str] = field(default_factory=dict)
    abandon_after: float = 0.05
    mix: Mix | None = None
    rules: AnswerRules | None = None
    reuse_body: Callable[[Any], Any] | None = None
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        object.__setattr__(self, "method", self.method.upper())
        if not self.path.startswith("/"):
            raise ConfigurationError(f"Route path must start with '/', got {self.path!r}")
        if self.weight < 1:
            raise ConfigurationError(f"Route weight must be >= 1, got {self.weight!r}")
        if not self.abandon_after > 0:
            raise ConfigurationError("Route abandon_after must be positive seconds")
        fields = [f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None]
        if fields and self.params is None:
            raise ConfigurationError(
                f"Route {self.path!r} has placeholders {fields}: give params=lambda: {{...}}"
            )

    @property
    def label(self) -> str:
        """The Locust statistics name, and the row of the outcome table."""
        return self.name or f"{self.method} {self.path}"

    def prepare(self) -> Prepared:
        path = self.path.format(**self.params()) if self.params is not None else self.path
        return Prepared(path, *_encode(self.body() if self.body is not None else None))

    def reused(self, original: Prepared, rng: random.Random) -> Prepared:
        """The same path with a body that differs from ``original``'s."""
        if self.reuse_body is not None:
            body, document = _encode(self.reuse_body(original.document))
        elif isinstance(original.document, dict):
            probe = f"{rng.getrandbits(64):016x}"
            body, document = _encode({**original.document, "idem_reuse_probe": probe})
        elif isinstance(original.document, list):
            body, document = _encode([*original.document, f"{rng.getrandbits(64):016x}"])
        else:
            body, document = original.body + b"\n", None
        if body == original.body:
            raise ConfigurationError(f"{self.label}: reuse_body returned the same body")
        return Prepared(original.path, body, document)


def _encode(value: Any) -> tuple[bytes, Any]:
    if isinstance(value, bytes):
        return value, None
    if value is None:
        return b"", None
    return json.dumps(value, separators=(",", ":")).encode(), value
