"""CRDT benchmark: merge cost and encoded size vs state size, Redis round trips, sync rounds.

Run: ``.venv/bin/python -m bench crdt``. Compares our msgpack encoding with JSON of the same
state, and our ORSet / counter with the ``crdts`` package from PyPI (k98kurz/CRDTs), whose
replicas sync by replaying each other's state updates. The sync section runs three
redis-servers with ``slowlog-log-slower-than 0`` and reports, for ORSets of 10k and 100k
elements, the longest single Redis command and the client time of a sync round after one
add (issue 13, finding 4).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio as aioredis

from bench.report import machine_summary, write_section
from crdt import GCounter, ORSet
from crdt.redis_store import CrdtStore, SyncCrdtStore
from crdt.sync import RegionSyncer
from idemkit.testing import RedisServer

COMMAND = ".venv/bin/python -m bench crdt"
SIZES = (100, 1_000, 10_000)
SYNC_SIZES = (10_000, 100_000)
ROUNDS = 5
REGIONS = ("eu", "us", "ap")


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
            client.config_resetstat()
            full = _timed(lambda n=n, big=big: store.merge(f"big{n}", big), repeat=3)
            stats = client.info("commandstats")
            calls = stats.get("cmdstat_evalsha", {}).get("calls", 0) / 3
            rows.append(
                f"| merge the full {n:,}-element ORSet state (chunks of 200) "
                f"| {full * 1000:.0f} µs | {calls:.2f} |"
            )
        client.close()
    return rows


def _script_names(store: CrdtStore) -> dict[str, str]:
    return {script.sha: name for name, script in store._scripts.items()}


async def _reset(clients: list[aioredis.Redis], slower_than_us: int) -> None:
    for client in clients:
        await client.config_set("slowlog-log-slower-than", slower_than_us)
        await client.slowlog_reset()
        await client.config_resetstat()


async def _measure(
    clients: list[aioredis.Redis], names: dict[str, str]
) -> tuple[int, str, int, int]:
    """Longest logged command (µs, which), commands run and commands over 10 ms, since the
    last ``_reset``."""
    longest, what, count, over = 0, "-", 0, 0
    for client in clients:
        stats = await client.info("commandstats")
        count += sum(
            v["calls"]
            for k, v in stats.items()
            if k not in ("cmdstat_config", "cmdstat_slowlog", "cmdstat_info")
        )
        for entry in await client.slowlog_get(10_000):
            command = entry["command"]
            text = command.decode("latin-1") if isinstance(command, bytes) else str(command)
            parts = text.split(" ")
            verb = parts[0].upper()
            if verb in ("SLOWLOG", "CONFIG", "INFO"):
                continue
            over += entry["duration"] > 10_000
            if entry["duration"] <= longest:
                continue
            label = verb
            if verb == "EVALSHA" and len(parts) > 1:
                label = f"EVALSHA {names.get(parts[1], '?')}"
            longest, what = int(entry["duration"]), label
    return longest, what, count, over


async def _sync_case(n: int) -> dict[str, Any]:
    servers = [RedisServer(extra_args=["--slowlog-max-len", "10000"]) for _ in REGIONS]
    for server in servers:
        server.start()
    clients = {r: aioredis.Redis.from_url(s.url) for r, s in zip(REGIONS, servers, strict=True)}
    try:
        eu = CrdtStore(clients["eu"], region="eu")
        syncer = RegionSyncer(clients, pair_timeout=600)
        names = _script_names(eu)
        every = list(clients.values())
        big = ORSet()
        for i in range(n):
            big.add("seed", f"item-{i}")
        # Long phases: log only commands over 1 ms, so the log never overflows.
        await _reset(every, 1_000)
        start = time.perf_counter()
        await eu.merge("big", big)
        load = (time.perf_counter() - start, await _measure(every, names))
        await _reset(every, 1_000)
        start = time.perf_counter()
        assert await syncer.run_until_quiet(seconds=900)
        full = (time.perf_counter() - start, await _measure(every, names))
        rounds = []
        for i in range(ROUNDS):
            await eu.add("big", f"new-{i}")
            await _reset(every, 0)
            start = time.perf_counter()
            report = await syncer.sync_once()
            first = time.perf_counter() - start
            assert report.shipped[("eu", "us")] == 1 and not report.full_passes
            measured = await _measure(every, names)
            start = time.perf_counter()
            await syncer.sync_once()  # the relayed entries come back and change nothing
            echo = time.perf_counter() - start
            rounds.append((first, echo, measured))
        await _reset([clients["eu"]], 0)
        delta = big.remove("item-0")  # its context is the version vector {seed: 1}
        await eu.merge("big", delta)
        remove = await _measure([clients["eu"]], names)
        return {"n": n, "load": load, "full": full, "rounds": rounds, "remove": remove}
    finally:
        for client in clients.values():
            await client.aclose()
        for server in servers:
            server.close()


def _ms(us: int) -> str:
    return f"{us / 1000:.2f} ms"


def _sync_rows() -> tuple[list[str], str]:
    rows = []
    verdict: dict[int, tuple[float, int]] = {}
    for n in SYNC_SIZES:
        case = asyncio.run(_sync_case(n))
        rounds = case["rounds"]
        firsts = [r[0] * 1000 for r in rounds]
        echoes = [r[1] * 1000 for r in rounds]
        longest = [r[2][0] for r in rounds]
        worst = max((r[2] for r in rounds), key=lambda x: x[0])
        commands = statistics.median(r[2][2] for r in rounds)
        load_s, (load_us, load_what, load_count, load_over) = case["load"]
        full_s, (full_us, full_what, full_count, full_over) = case["full"]
        remove_us, remove_what, _, _ = case["remove"]
        verdict[n] = (statistics.median(firsts), worst[0])
        rows.append(
            f"| {n:,} | {statistics.median(firsts):.1f} ms (max {max(firsts):.1f}) "
            f"| {statistics.median(echoes):.1f} ms "
            f"| {_ms(int(statistics.median(longest)))}; max {_ms(worst[0])} ({worst[1]}) "
            f"| {commands:.0f} | {_ms(remove_us)} ({remove_what}) "
            f"| {load_s:.2f} s, {load_count:,} cmds, longest {_ms(load_us)} ({load_what}),"
            f" {load_over} over 10 ms "
            f"| {full_s:.1f} s, {full_count:,} cmds, longest {_ms(full_us)} ({full_what}),"
            f" {full_over} over 10 ms |"
        )
    small, large = min(verdict), max(verdict)
    summary = (
        f"Target of issue 13: at most 10 ms per command at {large:,} elements, and a round"
        " after one add that does not grow with the set. Measured: the longest command of"
        f" any such round was {_ms(verdict[large][1])} at {large:,} elements"
        f" ({_ms(verdict[small][1])} at {small:,}); the round took"
        f" {verdict[small][0]:.1f} ms at {small:,} and {verdict[large][0]:.1f} ms at"
        f" {large:,} (median client time). A round's work is the polling of 64 shard streams"
        " per pair (XINFO) plus one small script per change, whatever the size of the sets."
    )
    return rows, summary


def main(argv: list[str]) -> None:
    del argv
    sets = _set_rows()
    counters = _counter_rows()
    redis_rows = _redis_rows()
    sync_rows, sync_summary = _sync_rows()
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
            "",
            "### Sync: a round after one add, on large sets",
            "",
            "Three regions (three redis-servers); an ORSet of n elements written in `eu` with"
            " `CrdtStore.merge` (chunks of 200) and synced everywhere (first sync: full passes"
            f" into `us` and `ap`, and the copies they relay); then {ROUNDS} times: one add in"
            " `eu` and one `RegionSyncer.sync_once()` (6 pairs, concurrently, 64 shards each)."
            " Round = client wall time of that `sync_once()` (median, max); echo = the next"
            " round, where the relayed entries change nothing. Longest command = the longest"
            " SLOWLOG entry (`slowlog-log-slower-than 0`) on any of the three servers during"
            " the round: median over the rounds, and the worst one; commands = commands the"
            " three servers ran in the round (`INFO commandstats`, median). Remove delta ="
            " merging `big.remove(...)` of an element whose dot is its replica's first, so its"
            " context is the version vector `{seed: 1}`. The last two columns log only commands"
            " over 1 ms; cmds there counts the commands scripts run inside Redis too. The"
            " machine is shared (2 cores, other jobs running): a SLOWLOG duration includes any"
            " time the server was descheduled; in the first sync the same log shows single"
            " `HGET`s inside scripts taking 5-15 ms, which only that explains (the same `scan`"
            " script over a whole 100k-element set, with nothing else running on the server:"
            " 0.2 ms median per call, 0.5 ms max over 3,000 calls). Before issue 13"
            " (reported there): 116-146 ms for the one script of a round at 10k, 1.5-1.7 s at"
            " 100k, and 52-59 ms for the remove delta at 10k.",
            "",
            "| n | round after one add | echo round | longest command in the round | commands"
            " | remove delta: longest command | writing the set | first sync |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *sync_rows,
            "",
            sync_summary,
        ]
    )
    write_section("crdt", markdown)
    print(markdown)
