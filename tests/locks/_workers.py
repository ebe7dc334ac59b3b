"""Worker processes for the multi-process safety test (module level, so ``spawn`` can import)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import redis

from idemkit.errors import LeaseLostError, StaleTokenError
from idemkit.fence import SyncFence
from idemkit.lock import SyncFencedLock


@dataclass
class Job:
    url: str
    worker: int
    workers: int
    rounds: int
    lease_ms: int
    pause_probability: float
    forced_pause_rounds: tuple[int, ...] = ()


@dataclass
class Outcome:
    accepted: list[tuple[int, int]] = field(default_factory=list)  # (value written, token)
    refused: int = 0
    plain_writes: int = 0
    pauses: int = 0
    lost_on_release: int = 0


def _barrier(client: redis.Redis, workers: int) -> None:
    # Start together, so a forced pause always overlaps with waiting contenders.
    client.incr("safety:ready")
    deadline = time.monotonic() + 30
    while int(client.get("safety:ready") or 0) < workers and time.monotonic() < deadline:
        time.sleep(0.01)


def contend(job: Job) -> Outcome:
    """Read-modify-write a fenced counter and an unfenced one under the same lock each round,
    sometimes sleeping past the lease between the read and the write (a GC pause)."""
    rng = random.Random(job.worker)
    client = redis.Redis.from_url(job.url)
    fence = SyncFence(client)
    lock = SyncFencedLock(client, "safety", lease_ms=job.lease_ms, poll_interval=0.05)
    out = Outcome()
    _barrier(client, job.workers)
    try:
        for round_ in range(job.rounds):
            token = lock.acquire(timeout=30)
            try:
                value: int | None = int(fence.read("counter", token).get("value", b"0"))
            except StaleTokenError:
                value = None
                out.refused += 1
            plain = int(client.get("safety:plain") or 0)
            if round_ in job.forced_pause_rounds or rng.random() < job.pause_probability:
                out.pauses += 1
                time.sleep(job.lease_ms / 1000 * rng.uniform(1.5, 2.5))
            if value is not None:
                try:
                    fence.write("counter", token, {"value": value + 1})
                    out.accepted.append((value + 1, token))
                except StaleTokenError:
                    out.refused += 1
            client.set("safety:plain", plain + 1)
            out.plain_writes += 1
            try:
                lock.release()
            except LeaseLostError:
                out.lost_on_release += 1
    finally:
        client.close()
    return out
