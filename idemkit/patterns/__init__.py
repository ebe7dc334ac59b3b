"""Transaction patterns on idemkit's primitives: outbox, idempotent consumer, saga.

A layer above the core: built from fenced leases, locks, fences and idempotency records,
never imported by them.
"""

from __future__ import annotations

from idemkit.patterns import outbox
from idemkit.patterns.consumer import Message, StreamConsumer
from idemkit.patterns.effects import (
    Applied,
    Effect,
    EffectContext,
    LeasedEffect,
    RedisEffect,
    SqlEffect,
)
from idemkit.patterns.errors import (
    PatternError,
    SagaBusyError,
    SagaConflictError,
    SagaDefinitionError,
    SagaError,
    StepFailed,
    UnsupportedConnectionError,
)
from idemkit.patterns.outbox import stream_name
from idemkit.patterns.relay import Relay
from idemkit.patterns.saga import Saga, SagaOrchestrator, SagaOutcome, Step, StepContext
from idemkit.patterns.saga_log import PostgresSagaLog, RedisSagaLog, SagaLog, SagaRecord

__all__ = [
    "Applied",
    "Effect",
    "EffectContext",
    "LeasedEffect",
    "Message",
    "PatternError",
    "PostgresSagaLog",
    "RedisEffect",
    "RedisSagaLog",
    "Relay",
    "Saga",
    "SagaBusyError",
    "SagaConflictError",
    "SagaDefinitionError",
    "SagaError",
    "SagaLog",
    "SagaOrchestrator",
    "SagaOutcome",
    "SagaRecord",
    "SqlEffect",
    "Step",
    "StepContext",
    "StepFailed",
    "StreamConsumer",
    "UnsupportedConnectionError",
    "outbox",
    "stream_name",
]
