"""The events the core emits for the observers to map: store operations of the sync engine,
lock acquire / hold / lost."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from idemkit import KeyReuseError, LockTimeoutError, SyncFencedLock, idempotent


def test_sync_calls_report_each_store_operation(sync_redis: redis.Redis) -> None:
    events: list[Any] = []

    @idempotent(sync_redis, key=lambda n: "one", namespace="t.double", observer=events.append)
    def double(n: int) -> int:
        return 2 * n

    assert double(2) == double(2) == 4
    with pytest.raises(KeyReuseError):
        double(3)
    seen = [(e.name, e.attrs.get("op"), e.outcome) for e in events]
    assert seen[:5] == [
        ("idempotency.store", "claim", "ok"),
        ("idempotency.store", "complete", "ok"),
        ("idempotency.call", None, "executed"),
        ("idempotency.store", "claim", "ok"),
        ("idempotency.call", None, "replayed"),
    ]
    assert seen[-1] == ("idempotency.call", None, "mismatch")
    assert all(e.duration >= 0 and e.start_ns > 0 for e in events)


def test_sync_lock_events(sync_redis: redis.Redis) -> None:
    events: list[Any] = []
    holder = SyncFencedLock(sync_redis, "r", lease_ms=400, observer=events.append)
    rival = SyncFencedLock(sync_redis, "r", lease_ms=400, observer=events.append)
    holder.acquire()
    with pytest.raises(LockTimeoutError):
        rival.acquire(timeout=0.02)
    time.sleep(0.45)  # the lease runs out and the rival takes the name
    rival.acquire(timeout=1)
    with pytest.raises(Exception, match="lost"):
        holder.release()
    rival.release()
    seen = [(e.name, e.outcome) for e in events]
    assert seen == [
        ("lock.acquire", "acquired"),
        ("lock.acquire", "timeout"),
        ("lock.acquire", "acquired"),
        ("lock.lost", "lost"),
        ("lock.hold", "lost"),
        ("lock.hold", "released"),
    ]
    assert events[1].duration >= 0.02 and events[4].duration >= 0.4
    assert all(e.attrs == {"kind": "lock"} for e in events)
