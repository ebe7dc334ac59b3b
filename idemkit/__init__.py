"""idemkit: make retries safe between services."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from idemkit.codec import StoredResponse
from idemkit.context import LeaseContext, fencing_token, lease_context
from idemkit.decorator import idempotent
from idemkit.embedded import embedded_redis, embedded_sync_redis
from idemkit.errors import (
    CallArgumentError,
    CallerIdentityError,
    CodecError,
    ConfigurationError,
    IdemkitError,
    IdempotencyError,
    InvalidKeyError,
    InvalidLockNameError,
    KeyReuseError,
    LeaseError,
    LeaseLostError,
    LockNotHeldError,
    LockTimeoutError,
    LockUsageError,
    ReplicationTimeoutError,
    RequestInFlightError,
    ResultNotStoredError,
    StaleTokenError,
    StoreUnavailableError,
)
from idemkit.fence import Fence, SyncFence
from idemkit.keys import parse_idempotency_key
from idemkit.lease import Claim, LeaseStore, SyncLeaseStore
from idemkit.lock import FencedLock, SyncFencedLock
from idemkit.middleware import IdempotencyMiddleware
from idemkit.observe import Event, Observer
from idemkit.policy import IdempotencyPolicy
from idemkit.scope import credentials_caller, header_caller, user_caller
from idemkit.semaphore import FencedSemaphore, SyncFencedSemaphore
from idemkit.sql_fence import fenced_update, fenced_upsert
from idemkit.values import MsgpackSerializer, Serializer

try:
    __version__ = _version("idemkit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree, not installed
    __version__ = "0+unknown"

__all__ = [
    "CallArgumentError",
    "CallerIdentityError",
    "Claim",
    "CodecError",
    "ConfigurationError",
    "Event",
    "Fence",
    "FencedLock",
    "FencedSemaphore",
    "IdemkitError",
    "IdempotencyError",
    "IdempotencyMiddleware",
    "IdempotencyPolicy",
    "InvalidKeyError",
    "InvalidLockNameError",
    "KeyReuseError",
    "LeaseContext",
    "LeaseError",
    "LeaseLostError",
    "LeaseStore",
    "LockNotHeldError",
    "LockTimeoutError",
    "LockUsageError",
    "MsgpackSerializer",
    "Observer",
    "ReplicationTimeoutError",
    "RequestInFlightError",
    "ResultNotStoredError",
    "Serializer",
    "StaleTokenError",
    "StoreUnavailableError",
    "StoredResponse",
    "SyncFence",
    "SyncFencedLock",
    "SyncFencedSemaphore",
    "SyncLeaseStore",
    "credentials_caller",
    "embedded_redis",
    "embedded_sync_redis",
    "fenced_update",
    "fenced_upsert",
    "fencing_token",
    "header_caller",
    "idempotent",
    "lease_context",
    "parse_idempotency_key",
    "user_caller",
]
