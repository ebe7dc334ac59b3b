"""idemkit: make retries safe between services."""

from __future__ import annotations

from idemkit.codec import StoredResponse
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
from idemkit.lease import Claim, LeaseStore, SyncLeaseStore

__all__ = [
    "Claim",
    "CodecError",
    "ConfigurationError",
    "IdemkitError",
    "IdempotencyError",
    "InvalidKeyError",
    "KeyReuseError",
    "LeaseError",
    "LeaseLostError",
    "LeaseStore",
    "RequestInFlightError",
    "StoreUnavailableError",
    "StoredResponse",
    "SyncLeaseStore",
]
