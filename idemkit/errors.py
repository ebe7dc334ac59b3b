"""Exceptions raised by idemkit.

Every public error derives from :class:`IdemkitError`::

    IdemkitError
    ├── ConfigurationError (ValueError)      bad options given to a constructor
    │   └── InvalidLockNameError             a lock/semaphore/fence name that is empty, too long,
    │                                        or breaks the Cluster hash tag
    ├── InvalidKeyError (ValueError)         an Idempotency-Key that breaks the syntax rules
    ├── CodecError (ValueError)              stored bytes that are corrupt or of another version
    ├── StoreUnavailableError                Redis could not be reached or answered with an error
    │   ├── EvictingStoreError               Redis may evict records (maxmemory-policy)
    │   └── ReplicationTimeoutError          a write was applied, but too few replicas
    │                                        confirmed it in time (WAIT / WAITAOF)
    ├── CallerIdentityError                  the caller of a keyed request cannot be identified
    ├── IdempotencyError                     outcomes of the decorator for plain functions
    │   ├── RequestInFlightError             the same key is still being executed elsewhere
    │   ├── KeyReuseError                    the same key was used for different arguments
    │   ├── CallArgumentError (TypeError)    an argument has no canonical encoding to fingerprint
    │   └── ResultNotStoredError             the call ran, but its result could not be stored
    └── LeaseError                           fenced-lease problems
        ├── LeaseLostError                   the lease expired or was taken over by a newer token
        ├── LockNotHeldError                 release/extend through a handle that holds nothing
        ├── LockTimeoutError (TimeoutError)  acquire gave up: the lock stayed busy
        ├── LockUsageError (RuntimeError)    a handle used wrongly (acquired twice, other loop)
        └── StaleTokenError                  a fence refused a write with an older token

The HTTP layer never lets these escape as a 500: it maps them to problem+json responses.
"""

from __future__ import annotations

__all__ = [
    "CallArgumentError",
    "CallerIdentityError",
    "CodecError",
    "ConfigurationError",
    "EvictingStoreError",
    "IdemkitError",
    "IdempotencyError",
    "InvalidKeyError",
    "InvalidLockNameError",
    "KeyReuseError",
    "LeaseError",
    "LeaseLostError",
    "LockNotHeldError",
    "LockTimeoutError",
    "LockUsageError",
    "ReplicationTimeoutError",
    "RequestInFlightError",
    "ResultNotStoredError",
    "StaleTokenError",
    "StoreUnavailableError",
]


class IdemkitError(Exception):
    """Root of every exception idemkit raises on purpose."""


class ConfigurationError(IdemkitError, ValueError):
    """An option passed to an idemkit constructor is invalid; the message names it."""


class InvalidKeyError(IdemkitError, ValueError):
    """An idempotency key is empty, too long or contains characters that are not allowed."""


class CodecError(IdemkitError, ValueError):
    """Bytes read back from the store are corrupt, foreign, or written by an unknown version."""


class StoreUnavailableError(IdemkitError):
    """The store (Redis) could not be reached or failed; retrying later is safe."""


class EvictingStoreError(StoreUnavailableError):
    """Redis runs with a ``maxmemory-policy`` that may evict idempotency records, so a
    completed key could run again; idemkit refuses to promise idempotency on it. Configure
    ``maxmemory-policy noeviction``, or pass ``evicting_store="warn"`` to accept the risk."""


class ReplicationTimeoutError(StoreUnavailableError):
    """A write reached the primary, but fewer than the required replicas acknowledged it
    within the timeout (``WAIT``/``WAITAOF``): a failover now could lose it. The write is not
    undone; repeating the operation is safe (the lease scripts are idempotent for their
    holder) and waits again. ``acked`` is how many replicas did confirm."""

    def __init__(self, message: str, *, acked: int = 0, required: int = 0) -> None:
        super().__init__(message)
        self.acked = acked
        self.required = required


class CallerIdentityError(IdemkitError):
    """The caller of a keyed request cannot be identified (e.g. an authenticated user object
    without ``identity``): its stored responses could not be kept apart from other callers'."""


class IdempotencyError(IdemkitError):
    """Base class for outcomes of ``@idempotent`` that are not a result."""


class RequestInFlightError(IdempotencyError):
    """Another call with the same key is still running; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class KeyReuseError(IdempotencyError):
    """The key was already used for a call with different arguments; use a fresh key."""


class CallArgumentError(IdempotencyError, TypeError):
    """An argument of an idempotent call has no canonical encoding, so two calls could not be
    compared; the message names the parameter and the type. Nothing was executed."""


class ResultNotStoredError(IdempotencyError):
    """An earlier call with this key ran to completion, but its result could not be stored
    (the message names the type). The function is not run again for this key."""

    def __init__(self, message: str, *, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name


class LeaseError(IdemkitError):
    """Base class for fenced-lease errors."""


class LeaseLostError(LeaseError):
    """The lease expired or a newer fencing token was granted; the holder must stop writing."""

    def __init__(self, message: str, *, token: int | None = None) -> None:
        super().__init__(message)
        self.token = token


class InvalidLockNameError(ConfigurationError):
    """A lock, semaphore or fenced-resource name is empty, too long, or contains braces."""


class LockNotHeldError(LeaseError):
    """``release()`` or ``extend()`` was called on a handle that has not acquired the lock."""


class LockTimeoutError(LeaseError, TimeoutError):
    """``acquire()`` did not get the lock within its timeout (or at once, non-blocking)."""


class LockUsageError(LeaseError, RuntimeError):
    """A lock handle was used wrongly: acquired while held, or used from another event loop."""


class StaleTokenError(LeaseError):
    """A fence refused an operation: a newer fencing token has already been seen.

    ``token`` is the refused token and ``newest`` the newest the resource has seen; the
    caller's lock was lost and it must stop, not retry with the same token.
    """

    def __init__(self, message: str, *, token: int, newest: int) -> None:
        super().__init__(message)
        self.token = token
        self.newest = newest
