"""Run the shop under Locust, inject a fault, verify the ledger, write the report.

``python -m loadtests run --duration 20s --fault restart-redis`` starts a throwaway
``redis-server`` (AOF on, free loopback port), the shop on uvicorn (``--workers N``), Locust
headless for the duration, injects the fault at 40 % of the run, then checks the ledger
against the clients' acknowledgements (:mod:`loadtests.verify`). Everything is bound to
127.0.0.1, every wait is bounded, and every child process is killed by process group on the
way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from idemkit.testing import RedisServer, free_port
from loadtests.service import read_ledger
from loadtests.verify import Verification, read_acks, verify

__all__ = ["FAULTS", "Outcome", "RunOptions", "run", "worker_pids"]

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ("restart-redis", "kill-worker", "pause-worker")

Echo = Callable[[str], None]


@dataclass
class RunOptions:
    duration: float = 20.0
    fault: str | None = None
    workers: int = 2
    users: int = 20
    embedded: bool = False
    report: Path | None = None
    out_dir: Path | None = None
    broken: str | None = None  # SHOP_BROKEN, for the verifier's own tests
    lease: float = 2.0  # the middleware's lease, seconds
    command: str = ""  # how the run was asked for, for the report

    def check(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"--fault must be one of {', '.join(FAULTS)}, got {self.fault!r}")
        if self.embedded and self.workers != 1:
            raise ValueError("--embedded keeps state in one process: use --workers 1")
        if self.embedded and self.fault is not None:
            raise ValueError("faults need a real Redis and several workers: drop --embedded")
        if self.fault in ("kill-worker", "pause-worker") and self.workers < 2:
            raise ValueError(f"--fault {self.fault} needs --workers 2 or more")
        if not 1 <= self.duration <= 3600 or not 1 <= self.users <= 1000:
            raise ValueError("duration must be 1..3600 s and users 1..1000")


@dataclass
class Outcome:
    options: RunOptions
    out_dir: Path
    verification: Verification
    ledger: dict[str, Any]
    stats: list[dict[str, str]]
    failures: list[dict[str, str]]
    latency: dict[str, Any]
    timeline: list[tuple[float, str]] = field(default_factory=list)
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return self.verification.ok

    def summary(self) -> dict[str, Any]:
        from loadtests.report import summarize

        return summarize(self)


def worker_pids(parent: int) -> list[int]:
    """uvicorn's worker processes under its supervisor ``parent``, from /proc.

    Only ``multiprocessing.spawn`` children count: the supervisor also owns a
    ``resource_tracker`` process, which is no worker.
    """
    children: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) != parent or fields[0] in ("Z", "X"):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if b"spawn_main" in cmdline.read():
                    children.append(int(entry))
        except OSError:
            continue
    return sorted(children)


def _kill_group(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGCONT)  # a paused worker cannot act on SIGTERM
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def _redis(opts: RunOptions) -> Iterator[RedisServer | None]:
    if opts.embedded:
        yield None
        return
    server = RedisServer(appendonly=True)
    try:
        yield server.start()
    finally:
        server.close()


def _start_service(
    opts: RunOptions, url: str | None, port: int, log: Path
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOP_LEASE": str(opts.lease), "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    env.pop("SHOP_BROKEN", None)
    if url:
        env["REDIS_URL"] = url
    if opts.broken:
        env["SHOP_BROKEN"] = opts.broken
    args = [
        sys.executable, "-m", "uvicorn", "loadtests.service:app_factory", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(opts.workers),
        "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2",
    ]  # fmt: skip
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait_ready(proc: subprocess.Popen[bytes], base: str, workers: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited at start:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health", timeout=1).status_code == 200 and (
                workers == 1 or len(worker_pids(proc.pid)) >= workers
            ):
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"the service did not answer /health within 30 s:\n{log.read_text()[-2000:]}"
    )


def _start_locust(opts: RunOptions, base: str, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LOADTEST_ACKS_DIR": str(out / "acks"), "PYTHONPATH": str(ROOT)}
    args = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"),
        "--headless", "-u", str(opts.users), "-r", str(opts.users),
        "-t", f"{round(opts.duration)}s", "--host", base,
        "--csv", str(out / "locust"), "--only-summary", "--stop-timeout", "2",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    with (out / "locust.log").open("wb") as log:
        return subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


class _Faults(threading.Thread):
    """Injects the fault at 40 % of the run; records what it did and when."""

    def __init__(
        self,
        opts: RunOptions,
        server: RedisServer | None,
        service: subprocess.Popen[bytes],
        t0: float,
    ) -> None:
        super().__init__(daemon=True, name="fault-injector")
        self.opts, self.server, self.service, self.t0 = opts, server, service, t0
        self.timeline: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self.cancel = threading.Event()
        self._paused: int | None = None

    def note(self, what: str) -> None:
        self.timeline.append((round(time.monotonic() - self.t0, 2), what))

    def run(self) -> None:
        try:
            if self.cancel.wait(self.opts.duration * 0.4):
                return
            getattr(self, "_" + (self.opts.fault or "").replace("-", "_"))()
        except BaseException as exc:  # reported by the driver, never lost in the thread
            self.error = exc

    def _restart_redis(self) -> None:
        assert self.server is not None
        self.note(f"kill -9 redis-server (port {self.server.port})")
        self.server.kill()
        time.sleep(1.0)
        self.server.process = None
        self.server.start()
        self.note("redis-server restarted from its AOF on the same port")

    def _kill_worker(self) -> None:
        pids = worker_pids(self.service.pid)
        if not pids:
            raise RuntimeError("no uvicorn worker to kill")
        os.kill(pids[0], signal.SIGKILL)
        self.note(f"kill -9 uvicorn worker {pids[0]} (of {pids})")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.cancel.is_set():
            now = worker_pids(self.service.pid)
            if len(now) >= self.opts.workers and pids[0] not in now:
                self.note(f"uvicorn replaced it: workers now {now}")
                return
            time.sleep(0.2)

    def _pause_worker(self) -> None:
        pids = worker_pids(self.service.pid)
        if not pids:
            raise RuntimeError("no uvicorn worker to pause")
        # Past the middleware lease, below uvicorn's 5 s health-check timeout (which would
        # otherwise replace the worker instead of letting it wake up as a zombie).
        pause = self.opts.lease + 1.5
        self._paused = pids[0]
        os.kill(pids[0], signal.SIGSTOP)
        self.note(f"SIGSTOP uvicorn worker {pids[0]} for {pause:.1f} s (lease {self.opts.lease} s)")
        try:
            self.cancel.wait(pause)
        finally:
            self.resume()

    def resume(self) -> None:
        pid, self._paused = self._paused, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.note(f"SIGCONT uvicorn worker {pid}")


def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as rows:
        return list(csv.DictReader(rows))


def _merge_latency(directory: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {"latency_ms": {}, "per_second": {}, "failures_per_second": {}}
    starts = []
    for path in sorted(directory.glob("latency-*.json")):
        doc = json.loads(path.read_text())
        starts.append(doc["started"])
        for ms, n in doc["latency_ms"].items():
            merged["latency_ms"][ms] = merged["latency_ms"].get(ms, 0) + n
        for sec, hist in doc["per_second"].items():
            slot = merged["per_second"].setdefault(sec, {})
            for ms, n in hist.items():
                slot[ms] = slot.get(ms, 0) + n
        for sec, n in doc["failures_per_second"].items():
            merged["failures_per_second"][sec] = merged["failures_per_second"].get(sec, 0) + n
    merged["started"] = min(starts, default=0.0)
    return merged


def _ledger(opts: RunOptions, server: RedisServer | None, base: str) -> dict[str, Any]:
    if server is None:
        doc: dict[str, Any] = httpx.get(f"{base}/_ledger", timeout=10).json()
        return doc

    async def read() -> dict[str, Any]:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(server.url)
        try:
            return await read_ledger(client)
        finally:
            await client.aclose()

    return asyncio.run(read())


def run(opts: RunOptions, echo: Echo = print) -> Outcome:
    """One bounded run; returns the outcome and writes the report (never raises on a
    violation: ``outcome.ok`` says whether the ledger verified)."""
    opts.check()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = opts.out_dir or ROOT / "loadtests" / "out" / f"{stamp}-{opts.fault or 'no-fault'}"
    (out / "acks").mkdir(parents=True, exist_ok=True)
    service: subprocess.Popen[bytes] | None = None
    locust: subprocess.Popen[bytes] | None = None
    faults: _Faults | None = None
    with _redis(opts) as server:
        try:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            where = f"redis-server :{server.port} (AOF)" if server else "embedded store"
            echo(f"service: {opts.workers} uvicorn worker(s) on {base}, {where}")
            service = _start_service(
                opts, server.url if server else None, port, out / "service.log"
            )
            _wait_ready(service, base, opts.workers, out / "service.log")
            echo(f"locust: {opts.users} users for {opts.duration:.0f} s" + (
                f", fault {opts.fault} at {opts.duration * 0.4:.0f} s" if opts.fault else ""
            ))  # fmt: skip
            t0 = time.monotonic()
            locust = _start_locust(opts, base, out)
            if opts.fault:
                faults = _Faults(opts, server, service, t0)
                faults.start()
            try:
                locust.wait(opts.duration + 45)
            except subprocess.TimeoutExpired:
                echo("locust overran its time budget: killed")
            if faults is not None:
                faults.cancel.set()
                faults.join(15)
                faults.resume()
                if faults.error is not None:
                    raise RuntimeError(f"fault injection failed: {faults.error}")
                for at, what in faults.timeline:
                    echo(f"fault @{at:5.1f}s: {what}")
            time.sleep(1.0)  # the service flushes its event counters every 0.5 s
            ledger = _ledger(opts, server, base)
        finally:
            _kill_group(locust)
            _kill_group(service)
            if faults is not None:
                faults.resume()
    acks = read_acks(sorted((out / "acks").glob("acks-*.jsonl")))
    outcome = Outcome(
        options=opts,
        out_dir=out,
        verification=verify(ledger, acks),
        ledger=ledger,
        stats=_read_csv(out / "locust_stats.csv"),
        failures=_read_csv(out / "locust_failures.csv"),
        latency=_merge_latency(out / "acks"),
        timeline=faults.timeline if faults else [],
    )
    from loadtests.report import write_report

    outcome.report = write_report(outcome, opts.report or out / "report.md")
    for line in outcome.verification.lines():
        echo(line)
    echo(f"report: {outcome.report}")
    return outcome


def command_line(opts: RunOptions) -> str:
    parts = ["python", "-m", "loadtests", "run", "--duration", f"{opts.duration:g}s"]
    if opts.fault:
        parts += ["--fault", opts.fault]
    parts += ["--workers", str(opts.workers), "--users", str(opts.users)]
    if opts.embedded:
        parts.append("--embedded")
    return shlex.join(parts)
