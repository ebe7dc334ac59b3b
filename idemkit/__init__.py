"""idemkit: make retries safe between services."""

from __future__ import annotations

from idemkit.codec import StoredResponse
from idemkit.context import LeaseContext, fencing_token, lease_context
from idemkit.decorator import idempotent
from idemkit.embedded import embedded_redis, embedded_sync_redis
from idemkit.errors import (
    CodecError,
    ConfigurationError,
    IdemkitError,
    IdempotencyError,
    InvalidKeyError,
    KeyReuseError,
    LeaseError,
    LeaseLostError,
    RequestInFlightError,
    StoreUnavailableError,
)
from idemkit.keys import parse_idempotency_key
from idemkit.lease import Claim, LeaseStore, SyncLeaseStore
from idemkit.middleware import IdempotencyMiddleware
from idemkit.policy import IdempotencyPolicy
from idemkit.scope import credentials_caller, header_caller

__all__ = [
    "Claim",
    "CodecError",
    "ConfigurationError",
    "IdemkitError",
    "IdempotencyError",
    "IdempotencyMiddleware",
    "IdempotencyPolicy",
    "InvalidKeyError",
    "KeyReuseError",
    "LeaseContext",
    "LeaseError",
    "LeaseLostError",
    "LeaseStore",
    "RequestInFlightError",
    "StoreUnavailableError",
    "StoredResponse",
    "SyncLeaseStore",
    "credentials_caller",
    "embedded_redis",
    "embedded_sync_redis",
    "fencing_token",
    "header_caller",
    "idempotent",
    "lease_context",
    "parse_idempotency_key",
]
