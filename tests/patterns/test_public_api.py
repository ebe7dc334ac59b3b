"""The patterns' public surface changes only on purpose, and the core never imports it."""

from __future__ import annotations

import subprocess
import sys

import idemkit.patterns as patterns

PUBLIC = [
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


def test_patterns_all_is_pinned_and_importable() -> None:
    assert patterns.__all__ == PUBLIC
    for name in patterns.__all__:
        assert getattr(patterns, name) is not None


def test_the_core_does_not_import_the_patterns() -> None:
    code = "import sys, idemkit, idemkit.lock, idemkit.lease, idemkit.fence, idemkit.sql_fence; "
    code += "print(any(m.startswith('idemkit.patterns') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
