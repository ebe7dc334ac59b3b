"""Fenced lock against redis-py ``Lock``, pottery ``Redlock`` (one master) and python-redis-lock.

Two measurements, in one run, variants alternating round by round so drift on the machine
hits every variant alike:

- uncontended: acquire + release cycles per second from one client (sync clients all);
- contended hand-off: 8 worker processes share one lock, each holds it ~1 ms then thinks
  ~2 ms outside it; the hand-off latency is the time from one holder starting its release to
  the next (different) holder returning from acquire. Peers run with their default waiting
  strategy: redis-py sleeps 0.1 s between tries, pottery up to 0.2 s at random,
  python-redis-lock blocks on a signal list like idemkit does.

Run: ``.venv/bin/python -m bench locks`` (``--quick`` for a smoke run). Every loop is bounded
in count and in time. Starts its own redis-server on a free loopback port.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bench.report import machine_summary, write_section
from idemkit.lock import SyncFencedLock
from idemkit.testing import RedisServer

VARIANTS = ("idemkit", "redis-py", "pottery", "python-redis-lock")
WORKERS = 8
LEASE_S = 10


@dataclass
class Pair:
    acquire: Callable[[], Any]
    release: Callable[[], Any]


def make_lock(variant: str, client: redis.Redis, name: str) -> Pair:
    """One lock handle of ``variant`` with a 10 s lease and blocking, unbounded waits."""
    if variant == "idemkit":
        lock = SyncFencedLock(client, name, lease_ms=LEASE_S * 1000)
        return Pair(lock.acquire, lock.release)
    if variant == "redis-py":
        rlock = client.lock(name, timeout=LEASE_S)
        return Pair(rlock.acquire, rlock.release)
    if variant == "pottery":
        from pottery import Redlock

        plock = Redlock(key=name, masters={client}, auto_release_time=LEASE_S)
        return Pair(plock.acquire, plock.release)
    if variant == "python-redis-lock":
        import redis_lock  # type: ignore[import-untyped]

        ilock = redis_lock.Lock(client, name, expire=LEASE_S)
        return Pair(ilock.acquire, ilock.release)
    raise ValueError(f"unknown variant {variant!r}")


def uncontended(url: str, slices: int, cycles: int, max_s: float) -> dict[str, float]:
    """Acquire/release cycles per second of each variant.

    Variants take turns in short slices of ``cycles`` cycles (order rotating), so load from
    anything else on the machine falls on all of them alike. Bounded by ``max_s`` in total.
    """
    clients = {v: redis.Redis.from_url(url) for v in VARIANTS}
    try:
        pairs = {v: make_lock(v, clients[v], f"bench:{v}:uncontended") for v in VARIANTS}
        for pair in pairs.values():
            for _ in range(50):  # warm up: connection, script loading
                pair.acquire()
                pair.release()
        spent = dict.fromkeys(VARIANTS, 0.0)
        done = dict.fromkeys(VARIANTS, 0)
        deadline = time.perf_counter() + max_s
        for slice_ in range(slices):
            if time.perf_counter() >= deadline:
                break
            shift = slice_ % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                pair = pairs[variant]
                start = time.perf_counter()
                for _ in range(cycles):
                    pair.acquire()
                    pair.release()
                spent[variant] += time.perf_counter() - start
                done[variant] += cycles
        return {v: done[v] / spent[v] for v in VARIANTS}
    finally:
        for client in clients.values():
            client.close()


@dataclass
class ContendJob:
    variant: str
    url: str
    name: str
    worker: int
    grants: int
    max_s: float
    start_at: float  # time.monotonic() is one clock for all processes on Linux


def contend(job: ContendJob) -> list[tuple[float, float, int]]:
    """(acquired at, release started at, worker) for each grant this worker got."""
    client = redis.Redis.from_url(job.url)
    try:
        pair = make_lock(job.variant, client, job.name)
        time.sleep(max(0.0, job.start_at - time.monotonic()))
        deadline = job.start_at + job.max_s
        events: list[tuple[float, float, int]] = []
        while len(events) < job.grants and time.monotonic() < deadline:
            pair.acquire()
            acquired = time.monotonic()
            time.sleep(0.001)
            releasing = time.monotonic()
            pair.release()
            events.append((acquired, releasing, job.worker))
            time.sleep(0.002)
        return events
    finally:
        client.close()


def ready(_: int) -> bool:
    """Import every variant in a pool worker before anything is timed."""
    import pottery  # noqa: F401
    import redis_lock  # noqa: F401

    return True


def handoffs(events: list[tuple[float, float, int]]) -> list[float]:
    ordered = sorted(events)
    out = []
    for (_, released, prev), (acquired, _, nxt) in itertools.pairwise(ordered):
        if prev != nxt:
            out.append(acquired - released)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench locks")
    parser.add_argument("--rounds", type=int, default=3, help="contended rounds")
    parser.add_argument("--slices", type=int, default=40, help="uncontended slices")
    parser.add_argument("--cycles", type=int, default=100, help="cycles per slice")
    parser.add_argument("--grants", type=int, default=12, help="grants per contending worker")
    parser.add_argument("--quick", action="store_true", help="one short round, no report")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.slices, args.grants = 1, 4, 3

    latency: dict[str, list[float]] = {v: [] for v in VARIANTS}
    grants_per_s: dict[str, list[float]] = {v: [] for v in VARIANTS}
    ctx = multiprocessing.get_context("spawn")
    with RedisServer() as server, ctx.Pool(WORKERS) as pool:
        # Spawned workers import on every core at first: let that finish before timing.
        pool.map(ready, range(WORKERS), chunksize=1)
        throughput = uncontended(server.url, args.slices, args.cycles, 120.0)
        print({v: round(rate) for v, rate in throughput.items()}, flush=True)
        for round_ in range(args.rounds):
            order = VARIANTS[round_ % len(VARIANTS) :] + VARIANTS[: round_ % len(VARIANTS)]
            for variant in order:
                name = f"bench:{variant}:{round_}"
                start_at = time.monotonic() + 0.5
                jobs = [
                    ContendJob(variant, server.url, f"{name}:c", w, args.grants, 15.0, start_at)
                    for w in range(WORKERS)
                ]
                events = [e for batch in pool.map(contend, jobs, chunksize=1) for e in batch]
                span = max(e[1] for e in events) - min(e[0] for e in events)
                latency[variant].extend(handoffs(events))
                grants_per_s[variant].append(len(events) / span)
                print(
                    f"round {round_} {variant:>18}: hand-off median "
                    f"{statistics.median(handoffs(events)) * 1e3:7.2f} ms",
                    flush=True,
                )

    base = throughput["redis-py"]
    rows = [
        "| variant | uncontended cycles/s | vs redis-py Lock | hand-off mean (ms) "
        "| hand-off median (ms) | hand-off p90 (ms) | contended grants/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant in VARIANTS:
        rate = throughput[variant]
        lat = sorted(latency[variant])
        p90 = lat[min(len(lat) - 1, int(len(lat) * 0.9))]
        rows.append(
            f"| {variant} | {rate:,.0f} | {rate / base:.2f}x | "
            f"{statistics.fmean(lat) * 1e3:.2f} | {statistics.median(lat) * 1e3:.2f} | "
            f"{p90 * 1e3:.2f} | "
            f"{statistics.median(grants_per_s[variant]):,.0f} |"
        )
    table = "\n".join(rows)
    print(table)
    if args.quick:
        return
    write_section(
        "locks",
        f"""## Fenced lock vs peer Redis locks

Command: `.venv/bin/python -m bench locks` (`bench/locks.py`), {args.rounds} rounds, variants
alternating; machine: {machine_summary()}.

Uncontended: one sync client per variant, acquire + release; the variants take turns in
{args.slices} slices of {args.cycles} cycles (order rotating), so background load hits all alike.
Contended: {WORKERS} processes on one lock, each holding it ~1 ms and waiting
~2 ms outside it, {args.grants} grants each per round; hand-off = from one holder starting
its release to the next, different holder returning from acquire. Peers use their default
waiting: redis-py `Lock` sleeps 0.1 s between tries, pottery `Redlock` (one master) up to
0.2 s at random, python-redis-lock blocks on a signal list (BLPOP), as idemkit does.
All locks have a 10 s lease; only idemkit also returns a fencing token.

{table}
""",
    )


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
