"""The idempotency rules shared by the middleware and the decorator, checked once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from idemkit.errors import ConfigurationError
from idemkit.scope import CallerResolver, credentials_caller

__all__ = [
    "ALWAYS_EXCLUDED_HEADERS",
    "DEFAULT_EXCLUDED_HEADERS",
    "IdempotencyPolicy",
    "PolicyOptions",
]

# Never replayed, whatever the configuration: they describe one transfer (framing), or are
# the replay marks themselves, and the replay sets its own.
ALWAYS_EXCLUDED_HEADERS: frozenset[str] = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "idempotent-replayed",
        "idempotent-body-omitted",
    }
)
# Not replayed by default: cookies carry per-session state, proxy headers belong to one hop,
# Date is recomputed by the server for the replay.
DEFAULT_EXCLUDED_HEADERS: frozenset[str] = ALWAYS_EXCLUDED_HEADERS | {
    "set-cookie",
    "proxy-authenticate",
    "proxy-authorization",
    "date",
}


class PolicyOptions(TypedDict, total=False):
    """Keyword options accepted by ``IdempotencyMiddleware`` and ``idempotent``."""

    ttl: float
    lease: float
    methods: Iterable[str]
    release_statuses: Iterable[int]
    replay_exclude_headers: Iterable[str]
    fingerprint_headers: Iterable[str]
    max_body_bytes: int
    max_response_bytes: int
    wait: float
    fail_open: bool
    retry_after: float
    store_timeout: float
    evicting_store: str
    caller: CallerResolver


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    ttl: float = 24 * 3600.0
    lease: float = 30.0
    methods: frozenset[str] = frozenset({"POST", "PATCH"})
    release_statuses: frozenset[int] = frozenset({408, 429, 503})
    replay_exclude_headers: frozenset[bytes] = field(
        default_factory=lambda: frozenset(h.encode() for h in DEFAULT_EXCLUDED_HEADERS)
    )
    fingerprint_headers: tuple[bytes, ...] = ()
    max_body_bytes: int = 1024 * 1024
    max_response_bytes: int = 1024 * 1024
    wait: float = 0.0
    fail_open: bool = False
    retry_after: float = 1.0
    store_timeout: float = 1.0
    evicting_store: str = "refuse"
    caller: CallerResolver = credentials_caller

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    @property
    def lease_ms(self) -> int:
        return int(self.lease * 1000)

    @property
    def renew_interval(self) -> float:
        """Renew at a third of the lease, so two renewals may fail before the lease ends."""
        return self.lease / 3

    @classmethod
    def from_options(cls, **options: object) -> IdempotencyPolicy:
        unknown = set(options) - set(PolicyOptions.__annotations__)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {sorted(unknown)}; "
                f"valid: {sorted(PolicyOptions.__annotations__)}"
            )
        values: dict[str, object] = dict(options)
        if "methods" in values:
            values["methods"] = frozenset(str(m).upper() for m in _iter(values, "methods"))
        if "release_statuses" in values:
            values["release_statuses"] = frozenset(
                _status(s) for s in _iter(values, "release_statuses")
            )
        for name in ("replay_exclude_headers", "fingerprint_headers"):
            if name in values:
                headers = tuple(str(h).lower().encode("latin-1") for h in _iter(values, name))
                values[name] = headers
        if "replay_exclude_headers" in values:
            always = {h.encode() for h in ALWAYS_EXCLUDED_HEADERS}
            values["replay_exclude_headers"] = frozenset(
                (*_iter(values, "replay_exclude_headers"), *always)
            )
        policy = cls(**values)  # type: ignore[arg-type]
        policy.check()
        return policy

    def check(self) -> None:
        if not self.lease > 0:
            raise ConfigurationError(f"lease must be positive seconds, got {self.lease!r}")
        if self.lease_ms < 10:
            raise ConfigurationError(f"lease must be at least 0.01 s, got {self.lease!r}")
        if not self.ttl >= self.lease:
            raise ConfigurationError(
                f"ttl ({self.ttl!r} s) must be at least the lease ({self.lease!r} s)"
            )
        if self.max_body_bytes < 0 or self.max_response_bytes < 0:
            raise ConfigurationError("max_body_bytes and max_response_bytes must be >= 0")
        if self.wait < 0 or self.retry_after <= 0:
            raise ConfigurationError("wait must be >= 0 and retry_after > 0 seconds")
        if not self.store_timeout > 0:
            raise ConfigurationError(
                f"store_timeout must be positive seconds, got {self.store_timeout!r}"
            )
        if self.evicting_store not in ("refuse", "warn"):
            raise ConfigurationError(
                f"evicting_store must be 'refuse' or 'warn', got {self.evicting_store!r}"
            )
        if not self.methods:
            raise ConfigurationError("methods must name at least one HTTP method")
        if not callable(self.caller):
            raise ConfigurationError("caller must be a callable taking the ASGI scope")


def _iter(values: dict[str, object], name: str) -> Iterable[object]:
    value = values[name]
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigurationError(f"{name} must be a collection, got {value!r}")
    return value


def _status(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 599:
        raise ConfigurationError(f"release_statuses must hold HTTP status codes, got {value!r}")
    return value
