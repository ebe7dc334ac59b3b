"""Exceptions raised by the transaction patterns, under :class:`~idemkit.errors.IdemkitError`::

    IdemkitError
    └── PatternError                     a transaction pattern could not do what was asked
        ├── UnsupportedConnectionError   a connection that is neither sqlite3 nor psycopg 3
        │   (ConfigurationError)
        ├── SagaError                    saga problems
        │   ├── SagaDefinitionError      a saga definition that cannot run (no steps,
        │   │   (ConfigurationError)     duplicate step names, an unknown saga name)
        │   ├── SagaConflictError        the saga id is already used for other input
        │   └── SagaBusyError            another orchestrator holds the saga's lease
        └── StepFailed                   raised by a saga step: a definitive business
                                         failure (no retry; compensate earlier steps)

A relay or orchestrator that lost its lease sees the core errors
:class:`~idemkit.errors.LeaseLostError` and :class:`~idemkit.errors.StaleTokenError`.
"""

from __future__ import annotations

from idemkit.errors import ConfigurationError, IdemkitError

__all__ = [
    "PatternError",
    "SagaBusyError",
    "SagaConflictError",
    "SagaDefinitionError",
    "SagaError",
    "StepFailed",
    "UnsupportedConnectionError",
]


class PatternError(IdemkitError):
    """Base class of the transaction patterns' errors."""


class UnsupportedConnectionError(PatternError, ConfigurationError):
    """The connection is not a ``sqlite3`` or psycopg 3 connection (or cursor)."""


class SagaError(PatternError):
    """Base class of saga errors."""


class SagaDefinitionError(SagaError, ConfigurationError):
    """A saga definition that cannot run: no steps, duplicate step names, unknown name."""


class SagaConflictError(SagaError):
    """The saga id was already started with other input; use a new saga id."""


class SagaBusyError(SagaError):
    """Another orchestrator holds this saga's lease; it will finish it (or its lease lapses
    and :meth:`~idemkit.patterns.SagaOrchestrator.recover` picks it up)."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StepFailed(PatternError):
    """Raise from a saga action when it failed for good (card declined, out of stock).

    The orchestrator does not retry it and does not compensate this step (it did nothing);
    it compensates the steps before it. Any other exception is treated as transient: the
    action is retried with the same idempotency key, and if it keeps failing its outcome is
    unknown, so it is compensated too.
    """
