"""CRDT benchmark: merge cost and encoded size vs state size, Redis round trips, peers.

Run: ``.venv/bin/python -m bench crdt``. Compares our msgpack encoding with JSON of the same
state, and our ORSet / counter with the ``crdts`` package from PyPI (k98kurz/CRDTs), whose
replicas sync by replaying each other's state updates.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from bench.report import machine_summary, write_section
from crdt import GCounter, ORSet
from crdt.redis_store import SyncCrdtStore
from idemkit.testing import RedisServer

COMMAND = ".venv/bin/python -m bench crdt"
SIZES = (100, 1_000, 10_000)


def _timed(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def _orsets(n: int) -> tuple[ORSet, ORSet]:
    a, b = ORSet(), ORSet()
    for i in range(n):
        a.add("eu", f"item-{i}")
        b.add("us", f"item-{i + n // 2}")
    for i in range(0, n, 4):
        a.remove(f"item-{i}")
    return a, b


def _json_size(state: ORSet) -> int:
    # The same information as plain JSON: element -> list of [replica, counter], and the
    # context as a version vector plus cloud.
    doc = {
        "entries": {str(e): [list(d) for d in sorted(ds)] for e, ds in state.entries.items()},
        "vv": state.context.vv,
        "cloud": [list(d) for d in sorted(state.context.cloud)],
    }
    return len(json.dumps(doc, separators=(",", ":")).encode())


def _peer_orsets(n: int) -> tuple[Any, Any] | None:
    try:
        import crdts
    except ImportError:
        return None
    a = crdts.ORSet()
    # Its replicas of one set must share the clock's uuid, each with its own counter.
    b = crdts.ORSet(clock=crdts.ScalarClock(uuid=a.clock.uuid))
    for i in range(n):
        a.observe(f"item-{i}")
        b.observe(f"item-{i + n // 2}")
    for i in range(0, n, 4):
        a.remove(f"item-{i}")
    return a, b


def _peer_merge(a: Any, b: Any) -> Any:
    import crdts

    merged = crdts.ORSet.unpack(a.pack())
    for update in b.history():
        merged.update(update)
    return merged


def _set_rows() -> list[str]:
    rows = []
    for n in SIZES:
        a, b = _orsets(n)
        merge_ms = _timed(lambda a=a, b=b: a | b)
        size = len((a | b).to_bytes())
        json_size = _json_size(a | b)
        codec_ms = _timed(lambda a=a: ORSet.from_bytes(a.to_bytes()))
        peer = _peer_orsets(n) if n <= 1_000 else None  # the peer is too slow beyond
        if peer is not None:
            peer_merge = _timed(lambda p=peer: _peer_merge(*p), repeat=3)
            peer_size = len(_peer_merge(*peer).pack())
            peer_cells = f"{peer_merge:.2f} ms | {peer_size:,} B"
        else:
            peer_cells = "(skipped: too slow) | -"
        rows.append(
            f"| {n:,} | {merge_ms:.2f} ms | {codec_ms:.2f} ms | {size:,} B | {json_size:,} B "
            f"| {peer_cells} |"
        )
    return rows


def _counter_rows() -> list[str]:
    rows = []
    for replicas in (3, 100, 10_000):
        a, b = GCounter(), GCounter()
        for r in range(replicas):
            a.increment(f"r{r}", r + 1)
            b.increment(f"r{r}", replicas - r)
        merge_ms = _timed(lambda a=a, b=b: a | b)
        size = len(a.to_bytes())
        json_size = len(json.dumps(a.counts, separators=(",", ":")).encode())
        rows.append(f"| {replicas:,} | {merge_ms:.3f} ms | {size:,} B | {json_size:,} B |")
    return rows


def _redis_rows() -> list[str]:
    rows = []
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        store = SyncCrdtStore(client, region="eu")
        ops = 2_000

        def per_op(fn: Callable[[int], Any]) -> float:
            client.config_resetstat()
            start = time.perf_counter()
            for i in range(ops):
                fn(i)
            elapsed = (time.perf_counter() - start) / ops * 1e6
            stats = client.info("commandstats")
            # Commands a script runs inside Redis are counted too; these ops only issue
            # scripts, so EVALSHA/EVAL calls are the round trips.
            top = ("cmdstat_evalsha", "cmdstat_eval")
            calls = sum(stats[k]["calls"] for k in top if k in stats)
            return elapsed, calls / ops  # type: ignore[return-value]

        cases: list[tuple[str, Callable[[int], Any]]] = [
            ("increment a PNCounter (past 2^53)", lambda i: store.increment("c", 2**60)),
            ("add to an ORSet", lambda i: store.add("s", f"e{i}")),
            ("remove from an ORSet", lambda i: store.remove("s", f"e{i}")),
            ("assign an LWWRegister (server HLC)", lambda i: store.assign("r", i)),
        ]
        for label, fn in cases:
            micros, calls = per_op(fn)
            rows.append(f"| {label} | {micros:.0f} µs | {calls:.2f} |")
        for n in SIZES:
            big, _ = _orsets(n)
            store.merge(f"big{n}", big)
            delta = big.add("eu", "new")
            micros, calls = per_op(lambda i, d=delta, n=n: store.merge(f"big{n}", d))
            rows.append(
                f"| merge a 1-element delta into a {n:,}-element ORSet "
                f"| {micros:.0f} µs | {calls:.2f} |"
            )
            full = _timed(lambda n=n, big=big: store.merge(f"big{n}", big), repeat=3)
            rows.append(
                f"| merge the full {n:,}-element ORSet state | {full * 1000:.0f} µs | 1.00 |"
            )
        client.close()
    return rows


def main(argv: list[str]) -> None:
    del argv
    sets = _set_rows()
    counters = _counter_rows()
    redis_rows = _redis_rows()
    markdown = "\n".join(
        [
            "## CRDTs (`crdt/`)",
            "",
            f"Command: `{COMMAND}`. Machine: {machine_summary()}. Medians of a few runs.",
            "",
            "### ORSet: merge cost and encoded size vs state size",
            "",
            "Two replicas of n elements each (half shared), a quarter removed on one side. Ours:"
            " join, msgpack round trip, bytes of the merged state; JSON of the same state; the"
            " `crdts` 0.0.4 ORSet (an LWW-element-set on a Lamport clock, see"
            " research/crdt.md) merged by replaying the other replica's history, and its"
            " packed size.",
            "",
            "| n | merge | bytes round trip | msgpack size | JSON size | crdts merge "
            "| crdts size |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *sets,
            "",
            "### GCounter: merge cost and size vs number of replicas",
            "",
            "| replicas | merge | msgpack size | JSON size |",
            "| ---: | ---: | ---: | ---: |",
            *counters,
            "",
            "### Redis: one script per write, merged inside Redis",
            "",
            "Sync client over loopback; round trips per op = EVALSHA/EVAL calls per op from"
            " `INFO commandstats` (1.00 = one script call).",
            "",
            "| operation | time per op | round trips per op |",
            "| --- | ---: | ---: |",
            *redis_rows,
        ]
    )
    write_section("crdt", markdown)
    print(markdown)
