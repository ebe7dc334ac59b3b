"""Safety with real processes: 8 workers contend on one lock and some are paused past their
lease. The fenced counter never loses an update and accepts tokens in increasing order; the
unfenced counter, written under the very same lock, does lose updates."""

from __future__ import annotations

import itertools
import multiprocessing

import redis

from tests.locks._workers import Job, Outcome, contend

WORKERS = 8
ROUNDS = 5


def test_fence_refuses_paused_holders_that_corrupt_the_unfenced_baseline(
    redis_url: str,
) -> None:
    jobs = [
        Job(
            url=redis_url,
            worker=w,
            workers=WORKERS,
            rounds=ROUNDS,
            lease_ms=150,
            pause_probability=0.1,
            # At least two pauses past the lease, early, while every other worker waits.
            forced_pause_rounds=(0,) if w in (0, 1) else (),
        )
        for w in range(WORKERS)
    ]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(WORKERS) as pool:
        outcomes: list[Outcome] = pool.map(contend, jobs, chunksize=1)

    accepted = sorted(pair for out in outcomes for pair in out.accepted)
    values = [value for value, _ in accepted]
    tokens = [token for _, token in accepted]
    # No lost update: every accepted write incremented the value the previous one left.
    assert values == list(range(1, len(values) + 1))
    # Accepted in strictly increasing token order (each holder writes once per grant).
    assert all(a < b for a, b in itertools.pairwise(tokens))
    assert sum(out.pauses for out in outcomes) >= 2
    assert sum(out.refused for out in outcomes) >= 1  # the fence did turn a zombie away

    client = redis.Redis.from_url(redis_url)
    try:
        fenced_final = int(client.hget("idemkit:fence:{counter}", "value") or 0)
        plain_final = int(client.get("safety:plain") or 0)
    finally:
        client.close()
    assert fenced_final == len(values)
    plain_writes = sum(out.plain_writes for out in outcomes)
    assert plain_writes == WORKERS * ROUNDS
    # The baseline: the same pauses made unfenced writes overwrite newer ones.
    assert plain_final < plain_writes, "expected the unfenced counter to lose updates"
