"""HTTP benchmark: the same small app bare, behind idemkit, and behind the PyPI peers.

``python -m bench http`` (or ``make bench``). Every variant is a uvicorn process (one worker,
127.0.0.1, free port) talking to one throwaway redis-server on loopback; the load comes from
a separate process: ``wrk`` with bench/http_keys.lua when installed (as root with apt-get it
is installed the way the Makefile installs redis-server), else this module's own asyncio
keep-alive client (``python -m bench.http load ...``). Segments of all variants alternate
over several rounds so drift (thermal, noisy neighbours) hits every variant alike; ratios
are taken against the bare app *of the same round*.

Measured per variant: requests/s, p50/p99 under saturation (closed loop, N connections),
p50/p99 at a moderate fixed rate (open loop, latency from the scheduled send time), Redis
commands per request (``INFO commandstats`` deltas), response statuses, and handler
executions per key counted inside the app (duplicates are what idempotency must prevent).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

from idemkit.testing import RedisServer, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "http_keys.lua"
BODY = b'{"amount": 1000, "currency": "EUR"}'

# Servers (one uvicorn process each) and the measured variants (server, key mode).
SERVERS = ("bare", "idemkit", "asgi-idempotency-header", "fastapi-idempotency-key")
VARIANTS: tuple[tuple[str, str, str], ...] = (
    # (label, server, mode)
    ("bare", "bare", "fresh"),
    ("idemkit (fresh keys)", "idemkit", "fresh"),
    ("idemkit (replay)", "idemkit", "replay"),
    ("asgi-idempotency-header (fresh keys)", "asgi-idempotency-header", "fresh"),
    ("asgi-idempotency-header (replay)", "asgi-idempotency-header", "replay"),
    ("fastapi-idempotency-key (fresh keys)", "fastapi-idempotency-key", "fresh"),
    ("fastapi-idempotency-key (replay)", "fastapi-idempotency-key", "replay"),
)
# Commands the variant runs inside its Lua scripts: commandstats counts them as well, but
# they cost no round trip. Reported separately.
SCRIPT_INNER = {
    "idemkit": {"time", "hmget", "hset", "hdel", "pexpire", "pttl"},
    "fastapi-idempotency-key": {"get", "set"},
}
PEER_PACKAGES = ("asgi-idempotency-header", "fastapi-idempotency-key")


# --------------------------------------------------------------------------- load generator


def _request_bytes(port: int, key: str) -> bytes:
    return (
        f"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    """Send one request on a keep-alive connection and read the whole response; the status."""
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        end = lower.index(b"\r\n", i + 2)
        length = int(lower[i + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _load(
    port: int,
    mode: str,
    prefix: str,
    connections: int,
    duration: float,
    rate: float,
    max_requests: int,
) -> dict[str, Any]:
    """Closed loop (rate 0: each connection sends as fast as answers come) or open loop at
    ``rate`` requests/s spread over the connections, latency from the scheduled time."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    start = time.perf_counter()
    deadline = start + duration
    interval = connections / rate if rate > 0 else 0.0

    async def worker(w: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        try:
            while len(latencies) < max_requests:
                if interval:
                    scheduled = start + (n + w / connections) * interval
                    if scheduled >= deadline:
                        break
                    delay = scheduled - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                else:
                    scheduled = time.perf_counter()
                    if scheduled >= deadline:
                        break
                key = f"{prefix}-replay" if mode == "replay" else f"{prefix}-{w}-{n}"
                n += 1
                try:
                    status = await asyncio.wait_for(
                        _exchange(reader, writer, _request_bytes(port, key)), 10
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    errors += 1
                    break
                latencies.append(time.perf_counter() - scheduled)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    await asyncio.gather(*(worker(w) for w in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "p50_us": int(_percentile(latencies, 50) * 1e6),
        "p99_us": int(_percentile(latencies, 99) * 1e6),
        "socket_errors": errors,
        "statuses": statuses,
    }


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


def load_main(argv: list[str]) -> None:
    """``python -m bench.http load PORT MODE PREFIX CONNECTIONS DURATION RATE``: one JSON line."""
    port, mode, prefix, conns, duration, rate = argv
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(
        _load(int(port), mode, prefix, int(conns), float(duration), float(rate), 2_000_000)
    )
    print("LOADJSON " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- orchestration


def ensure_wrk(install: bool) -> str | None:
    """Path of wrk; as root with apt-get, install Debian's wrk first (like redis-server)."""
    path = shutil.which("wrk")
    if path or not install:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk missing: installing Debian's wrk", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=120, check=False)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "wrk"],
                env=env,
                timeout=180,
                check=False,
                stdout=subprocess.DEVNULL,
            )
    return shutil.which("wrk")


@dataclass
class Segment:
    label: str
    round: int
    rps: float
    p50_us: int
    p99_us: int
    statuses: dict[str, int]
    socket_errors: int
    commands: dict[str, int]
    executions: dict[str, Any]
    requests: int


@dataclass
class Run:
    servers: dict[str, int] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    fixed: list[Segment] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


def _get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def _post(port: int, key: str, body: bytes = BODY) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/orders",
        data=body,
        method="POST",
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}


def _wait_http(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {process.returncode}")
        try:
            _get_json(port, "/stats")
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer within {timeout}s")


def _commandstats(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in stats.items()
        if name not in ("cmdstat_info", "cmdstat_flushall")
    }


def _run_load(
    wrk: str | None,
    port: int,
    mode: str,
    prefix: str,
    connections: int,
    duration: float,
    rate: float,
) -> dict[str, Any]:
    if wrk is not None and rate == 0:
        args = [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(LUA),
            f"http://127.0.0.1:{port}",
            "--",
            mode,
            prefix,
        ]
        tag = "WRKJSON "
    else:
        args = [
            sys.executable,
            "-m",
            "bench.http",
            "load",
            str(port),
            mode,
            prefix,
            str(connections),
            str(duration),
            str(rate),
        ]
        tag = "LOADJSON "
    out = subprocess.run(
        args, capture_output=True, text=True, timeout=duration + 60, cwd=ROOT, check=False
    )
    for line in out.stdout.splitlines():
        if line.startswith(tag):
            result: dict[str, Any] = json.loads(line[len(tag) :])
            return result
    raise RuntimeError(f"load generator failed: {out.stdout[-500:]} {out.stderr[-500:]}")


def _segment(
    run: Run,
    client: redis.Redis,
    wrk: str | None,
    label: str,
    server: str,
    mode: str,
    rnd: int,
    connections: int,
    duration: float,
    rate: float,
) -> Segment:
    port = run.servers[server]
    client.flushall()
    prefix = f"r{rnd}{'f' if rate else 's'}{abs(hash(label)) % 10000}"
    if mode == "replay":
        _post(port, f"{prefix}-replay")  # the completed key every request replays
    _get_json(port, "/stats?reset=1")
    before = _commandstats(client)
    result = _run_load(wrk, port, mode, prefix, connections, duration, rate)
    after = _commandstats(client)
    executions = _get_json(port, "/stats")
    commands = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    return Segment(
        label=label,
        round=rnd,
        rps=result["requests"] / (result["duration_us"] / 1e6),
        p50_us=result["p50_us"],
        p99_us=result["p99_us"],
        statuses=result["statuses"],
        socket_errors=result["socket_errors"],
        commands=commands,
        executions=executions,
        requests=result["requests"],
    )


async def _contention(port: int, keys: int, per_key: int) -> dict[str, int]:
    """``per_key`` concurrent first requests for each of ``keys`` new keys; status counts."""
    statuses: dict[str, int] = {}

    async def one(key: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            exchange = _exchange(reader, writer, _request_bytes(port, key))
            status = await asyncio.wait_for(exchange, 10)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    for k in range(keys):
        await asyncio.gather(*(one(f"contended-{k}") for _ in range(per_key)))
    return statuses


def _checks(run: Run, server: str) -> dict[str, Any]:
    """Correctness under the benchmark's conditions: concurrent duplicates and a retry."""
    port = run.servers[server]
    _get_json(port, "/stats?reset=1")
    statuses = asyncio.run(_contention(port, keys=20, per_key=16))
    contended = _get_json(port, "/stats")
    _get_json(port, "/stats?reset=1")
    first = _post(port, "retry-check")
    retry = _post(port, "retry-check")
    other_body = _post(port, "retry-check", b'{"amount": 1, "currency": "EUR"}')
    executed = _get_json(port, "/stats")
    replay_marker = any(
        retry[1].get(h) == "true" for h in ("idempotent-replayed", "idempotency-replayed")
    )
    return {
        "contention_statuses": statuses,
        "contention_executions": contended,
        "retry": [first[0], retry[0], other_body[0]],
        "retry_replayed": replay_marker,
        "retry_executions": executed["executions"],
    }


def measure(args: argparse.Namespace) -> Run:
    wrk = None if args.no_wrk else ensure_wrk(install=True)
    run = Run()
    processes: list[subprocess.Popen[bytes]] = []
    redis_server = RedisServer()
    try:
        redis_server.start()
        client = redis.Redis.from_url(redis_server.url)
        for server in SERVERS:
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.apps.variants", server, str(port), redis_server.url],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )
            processes.append(process)
            _wait_http(port, process)
            run.servers[server] = port
        for server in SERVERS[1:]:
            run.checks[server] = _checks(run, server)
            print(f"  checks {server}: {run.checks[server]}", flush=True)
        # warm-up: every server once, not recorded
        for label, server, mode in VARIANTS:
            _segment(run, client, wrk, label, server, mode, 0, args.connections, 1.0, 0)
        for rnd in range(1, args.rounds + 1):
            order = list(VARIANTS[rnd % len(VARIANTS) :] + VARIANTS[: rnd % len(VARIANTS)])
            for label, server, mode in order:
                segment = _segment(
                    run, client, wrk, label, server, mode, rnd, args.connections, args.duration, 0
                )
                run.segments.append(segment)
                print(
                    f"  round {rnd} {label:40s} {segment.rps:8.0f} req/s "
                    f"p50 {segment.p50_us / 1000:6.2f} ms p99 {segment.p99_us / 1000:6.2f} ms "
                    f"{segment.statuses}",
                    flush=True,
                )
        for rnd in range(1, args.fixed_rounds + 1):
            for label, server, mode in VARIANTS:
                segment = _segment(
                    run,
                    client,
                    wrk,
                    label,
                    server,
                    mode,
                    rnd,
                    args.fixed_connections,
                    args.fixed_duration,
                    args.rate,
                )
                run.fixed.append(segment)
                print(
                    f"  fixed {args.rate:.0f}/s {label:40s} p50 {segment.p50_us / 1000:6.2f} ms "
                    f"p99 {segment.p99_us / 1000:6.2f} ms {segment.statuses}",
                    flush=True,
                )
        client.close()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        redis_server.close()
    run_meta["wrk"] = wrk
    return run


run_meta: dict[str, Any] = {}


# --------------------------------------------------------------------------- report


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _client_commands(server: str, commands: dict[str, int]) -> tuple[dict[str, int], int]:
    inner = SCRIPT_INNER.get(server, set())
    top = {k: v for k, v in commands.items() if k not in inner}
    return top, sum(v for k, v in commands.items() if k in inner)


def report(run: Run, args: argparse.Namespace, command: str) -> str:
    from bench.report import machine_summary

    labels = [label for label, _, _ in VARIANTS]
    server_of = {label: server for label, server, _ in VARIANTS}
    by_round: dict[int, dict[str, Segment]] = {}
    for s in run.segments:
        by_round.setdefault(s.round, {})[s.label] = s
    fixed: dict[str, list[Segment]] = {}
    for s in run.fixed:
        fixed.setdefault(s.label, []).append(s)

    generator = (
        "wrk (1 thread, `bench/http_keys.lua`)"
        if run_meta.get("wrk")
        else "the asyncio keep-alive client of bench/http.py"
    )
    lines = [
        "## HTTP: idemkit vs bare app vs PyPI peers",
        "",
        f"Machine: {machine_summary()}.",
        "",
        "Versions: "
        + ", ".join(
            f"{p} {_version(p)}"
            for p in (
                "idemkit",
                "redis",
                "starlette",
                "uvicorn",
                "uvloop",
                "httptools",
                *PEER_PACKAGES,
            )
        )
        + ".",
        "",
        f"Command: `{command}`",
        "",
        f"Each variant is the same Starlette app (`bench/apps/variants.py`) in its own uvicorn "
        f"process (1 worker, uvloop + httptools when installed), all on one redis-server on "
        f"127.0.0.1. Load: {generator} "
        f"in a separate process, {args.connections} keep-alive connections, closed loop, "
        f"{args.duration:g} s per variant per round, {args.rounds} rounds with the variant "
        f"order rotated each round (after a 1 s warm-up of every variant). Ratios are "
        f"variant / bare of the same round, median over the rounds (min-max in brackets). "
        f"Fixed load: {args.rate:g} requests/s open loop over {args.fixed_connections} "
        f"connections, {args.fixed_duration:g} s per variant, {args.fixed_rounds} rounds, "
        f"latency from the scheduled send time. The machine has {os.cpu_count()} cores shared "
        f"by the server, redis-server and the load generator.",
        "",
        "### Throughput and latency under saturation",
        "",
        "| variant | req/s (median) | x bare | p50 ms | p50 x bare | p99 ms | p99 x bare "
        "| statuses (last round) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    summary: dict[str, dict[str, float]] = {}
    for label in labels:
        segs = [r[label] for r in by_round.values() if label in r]
        ratios = [r[label].rps / r["bare"].rps for r in by_round.values() if label in r]
        p50r = [r[label].p50_us / r["bare"].p50_us for r in by_round.values() if label in r]
        p99r = [r[label].p99_us / r["bare"].p99_us for r in by_round.values() if label in r]
        rps = _median([s.rps for s in segs])
        summary[label] = {"rps": rps, "ratio": _median(ratios)}
        last = segs[-1] if segs else None
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(last.statuses.items())) if last else ""
        lines.append(
            f"| {label} | {rps:,.0f} | {_median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
            f"| {_median([s.p50_us for s in segs]) / 1000:.2f} | {_median(p50r):.2f} "
            f"| {_median([s.p99_us for s in segs]) / 1000:.2f} | {_median(p99r):.2f} | {statuses} |"
        )
    lines += [
        "",
        f"### Latency at a fixed {args.rate:g} requests/s",
        "",
        "| variant | p50 ms | p99 ms | p50 added vs bare ms | p99 added vs bare ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    bare_p50 = _median([s.p50_us for s in fixed.get("bare", [])])
    bare_p99 = _median([s.p99_us for s in fixed.get("bare", [])])
    for label in labels:
        segs = fixed.get(label, [])
        p50 = _median([s.p50_us for s in segs])
        p99 = _median([s.p99_us for s in segs])
        lines.append(
            f"| {label} | {p50 / 1000:.2f} | {p99 / 1000:.2f} | {(p50 - bare_p50) / 1000:+.2f} "
            f"| {(p99 - bare_p99) / 1000:+.2f} |"
        )
    lines += [
        "",
        "### Redis commands per request",
        "",
        "From `INFO commandstats` deltas over each saturation segment (INFO and FLUSHALL "
        "excluded), divided by the requests completed. *Sent* are the commands clients sent "
        "(each one a round trip unless pipelined); *in scripts* are the commands the "
        "variant's Lua scripts ran inside Redis (no round trip).",
        "",
        "| variant | sent per request | in scripts per request | sent, by command |",
        "| --- | ---: | ---: | --- |",
    ]
    for label in labels:
        segs = [r[label] for r in by_round.values() if label in r]
        if not segs:
            continue
        total_requests = sum(s.requests for s in segs)
        merged: dict[str, int] = {}
        for s in segs:
            for k, v in s.commands.items():
                merged[k] = merged.get(k, 0) + v
        top, inner = _client_commands(server_of[label], merged)
        per = sum(top.values()) / total_requests if total_requests else 0
        detail = (
            ", ".join(f"{k} {v / total_requests:.2f}" for k, v in sorted(top.items()) if v)
            or "none"
        )
        lines.append(f"| {label} | {per:.2f} | {inner / total_requests:.2f} | {detail} |")
    lines += [
        "",
        "### Correctness under the benchmark's concurrency",
        "",
        "Handler executions are counted per `Idempotency-Key` inside the app. *Contention*: 20 "
        "new keys, each sent by 16 connections at once. *Retry*: the same key sent twice in a "
        "row, then with a different body (status codes in order).",
        "",
        "| variant | contention: statuses | keys executed more than once | retry statuses "
        "| retry replayed | handler runs for the 3 retry-check requests |",
        "| --- | --- | ---: | --- | --- | ---: |",
    ]
    for server, check in run.checks.items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(check["contention_statuses"].items()))
        lines.append(
            f"| {server} | {statuses} | "
            f"{check['contention_executions']['keys_executed_more_than_once']} | "
            f"{' / '.join(str(s) for s in check['retry'])} | "
            f"{'yes' if check['retry_replayed'] else 'no'} | {check['retry_executions']} |"
        )
    dup_lines = []
    for s in run.segments:
        if s.executions.get("extra_executions"):
            dup_lines.append(f"{s.label} round {s.round}: {s.executions}")
    lines += [
        "",
        "Duplicate executions during the throughput segments: "
        + ("; ".join(dup_lines) if dup_lines else "none in any variant")
        + ".",
    ]
    run_meta["summary"] = summary
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["load"]:
        load_main(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench http", description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per segment")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=400.0, help="fixed-load requests/s")
    parser.add_argument("--fixed-connections", type=int, default=8)
    parser.add_argument("--fixed-duration", type=float, default=3.0)
    parser.add_argument("--fixed-rounds", type=int, default=2)
    parser.add_argument("--no-wrk", action="store_true", help="use the built-in load generator")
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    parser.add_argument(
        "--notes",
        type=Path,
        default=Path(__file__).with_name("http_notes.md"),
        help="markdown appended to the section (default: bench/http_notes.md)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    run = measure(args)
    command = "python -m bench http" + (" " + " ".join(argv) if argv else "")
    markdown = report(run, args, command)
    if args.notes is not None and args.notes.exists():
        markdown += "\n\n" + args.notes.read_text()
    print(markdown)
    print(f"(took {time.monotonic() - started:.0f} s)")
    if not args.no_write:
        from bench.report import write_section

        write_section("http", markdown)


if __name__ == "__main__":
    main(sys.argv[1:])
