"""Run a service under Locust with the idempotency kit, inject a fault, verify, report.

``python -m loadtests run --duration 20s --fault restart-redis`` starts a throwaway
``redis-server`` (AOF on, free loopback port), a throwaway PostgreSQL (the shop's orders and
outbox; ``--database URL`` uses another), the shop on uvicorn (``--workers N``), the shop's
pattern workers (two saga orchestrators, two outbox relays, two read-model consumers:
``python -m loadtests.workers``), Locust headless with the shop's locustfile, injects the
fault at 40 % of the run, then writes the kit's report with the fault timeline.

Any other service works the same way: ``--start "uvicorn myapp:app --port {port}"`` (the
driver picks a free port, optionally starts a Redis for it as ``{redis_url}`` and
``REDIS_URL``, and kills the process group afterwards) or ``--target URL`` for a service
that is already running, with ``--locustfile`` naming the user's own locustfile. Faults
need processes the driver started: ``restart-redis`` its Redis, ``kill-worker`` and
``pause-worker`` the started service's worker processes, and the shop's pattern faults
(``kill-orchestrator``, ``pause-orchestrator``, ``kill-relay``, ``pause-relay``,
``kill-consumer``) its worker processes: each is told to SIGKILL or SIGSTOP itself at its
fault point (:mod:`loadtests.workers`), then restarted or continued.

The verdict is the kit's: the client-side checks plus the locustfile's server-side check
hooks, computed inside Locust when it quits (``--idem-json``). Everything is bound to
127.0.0.1, every wait is bounded, and every child process is killed by process group.
"""

from __future__ import annotations

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

from idemkit.testing import PostgresServer, RedisServer, free_port
from integrations.locust import Verification, write_report

__all__ = ["FAULTS", "PATTERN_FAULTS", "Outcome", "RunOptions", "run", "worker_pids"]

ROOT = Path(__file__).resolve().parent.parent
SHOP_LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
PATTERN_FAULTS = (
    "kill-orchestrator",
    "pause-orchestrator",
    "kill-relay",
    "pause-relay",
    "kill-consumer",
)
FAULTS = ("restart-redis", "kill-worker", "pause-worker", *PATTERN_FAULTS)
# The shop's pattern workers: (name, role of ``python -m loadtests.workers``).
SHOP_WORKERS = (
    ("orchestrator-1", "orchestrate"),
    ("orchestrator-2", "orchestrate"),
    ("relay-1", "relay"),
    ("relay-2", "relay"),
    ("consumer-1", "consume"),
    ("consumer-2", "consume"),
)

Echo = Callable[[str], None]


@dataclass
class RunOptions:
    duration: float = 20.0
    fault: str | None = None
    workers: int = 2  # the shop's uvicorn workers
    users: int = 20
    embedded: bool = False
    report: Path | None = None
    out_dir: Path | None = None
    broken: str | None = None  # SHOP_BROKEN, for the verifier's own tests
    lease: float = 2.0  # the shop middleware's lease, seconds
    command: str = ""  # how the run was asked for, for the report
    target: str | None = None  # the service's base URL; may hold {port} with ``start``
    start: str | None = None  # the user's start command: {port}, {redis_url}, {host}
    locustfile: Path | None = None  # default: the shop's
    redis: bool = False  # start a throwaway Redis for ``start`` even without restart-redis
    health: str = "/"  # path polled until a started service answers (any status below 500)
    processes: int = 1  # Locust processes (>1: a master and that many workers)
    database: str | None = None  # the shop's database URL (default: a throwaway PostgreSQL)

    @property
    def shop(self) -> bool:
        return self.start is None and self.target is None

    def check(self) -> None:
        if self.fault is not None and self.fault not in FAULTS:
            raise ValueError(f"--fault must be one of {', '.join(FAULTS)}, got {self.fault!r}")
        if not 1 <= self.duration <= 3600 or not 1 <= self.users <= 1000:
            raise ValueError("duration must be 1..3600 s and users 1..1000")
        if not 1 <= self.processes <= 16:
            raise ValueError("--processes must be 1..16")
        if not self.shop:
            if self.embedded or self.broken:
                raise ValueError("--embedded and broken shops are options of the built-in shop")
            if self.locustfile is None:
                raise ValueError("--target/--start need --locustfile: the service's own routes")
            if self.start is None and self.fault is not None:
                raise ValueError(
                    f"--fault {self.fault} needs processes the driver started: give --start"
                )
            if self.fault in PATTERN_FAULTS or self.database:
                raise ValueError(
                    "--database and the pattern faults are options of the built-in shop "
                    "(its orchestrators, relays and consumers)"
                )
            return
        if self.embedded and self.workers != 1:
            raise ValueError("--embedded keeps state in one process: use --workers 1")
        if self.embedded and self.fault is not None:
            raise ValueError("faults need a real Redis and several workers: drop --embedded")
        if self.embedded and self.database:
            raise ValueError("--embedded keeps its orders in a private SQLite file: no --database")
        if self.database and not self.database.startswith(
            ("postgresql://", "postgres://", "sqlite:///")
        ):
            raise ValueError("--database must be a postgresql:// or sqlite:/// URL")
        if self.fault in ("kill-worker", "pause-worker") and self.workers < 2:
            raise ValueError(f"--fault {self.fault} needs --workers 2 or more")

    @property
    def wants_workers(self) -> bool:
        """The shop runs its sagas, relay and consumer as processes of their own."""
        return self.shop and not self.embedded

    @property
    def wants_redis(self) -> bool:
        if self.shop:
            return not self.embedded
        return self.start is not None and (
            self.redis or self.fault == "restart-redis" or "{redis_url}" in self.start
        )


@dataclass
class Outcome:
    options: RunOptions
    out_dir: Path
    verification: Verification
    result: dict[str, Any]  # the kit's run summary (``--idem-json``) plus driver facts
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (epoch, what)
    report: Path | None = None
    locust_exit: int | None = None

    @property
    def ok(self) -> bool:
        return self.verification.ok

    def summary(self) -> dict[str, Any]:
        """Headline numbers: requests and failures (Locust), and outcome counts (the kit)."""
        rows = self.result.get("routes", [])
        rows_by_name = {r.get("name"): r for r in self.result.get("requests", [])}
        total: dict[str, Any] = rows_by_name.get("Aggregated", {})

        def outcome(column: str) -> int:
            return sum(int(row.get(column, 0)) for row in rows)

        return {
            "requests": int(total.get("requests", 0)),
            "failures": int(total.get("failures", 0)),
            "operations": outcome("operations"),
            "acknowledged": outcome("acknowledged"),
            "executed": outcome("executed"),
            "replays": outcome("replayed"),
            "conflicts_409": outcome("409"),
            "mismatches_422": outcome("422"),
            "unavailable_503": outcome("503"),
            "timeouts": outcome("timeout"),
            "abandoned": outcome("abandoned"),
            "service": self.result.get("info", {}),
            "verification": self.verification.to_dict(),
        }


def worker_pids(parent: int) -> list[int]:
    """Worker processes of a server whose supervisor is ``parent`` (uvicorn, gunicorn), from
    /proc: its live children, except multiprocessing's ``resource_tracker``."""
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
                if b"resource_tracker" not in cmdline.read():
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
    if not opts.wants_redis:
        yield None
        return
    server = RedisServer(appendonly=True)
    try:
        yield server.start()
    finally:
        server.close()


@contextlib.contextmanager
def _database(opts: RunOptions) -> Iterator[str | None]:
    """The shop's database URL: ``--database``, or a throwaway PostgreSQL."""
    if not opts.wants_workers:
        yield None
        return
    if opts.database:
        yield opts.database
        return
    server = PostgresServer()
    try:
        yield server.start().dsn
    finally:
        server.close()


def _env(extra: dict[str, str]) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    for name in ("REDIS_URL", "SHOP_BROKEN", "SHOP_DB", "SHOP_PATTERNS"):
        env.pop(name, None)
    env.update(extra)
    return env


class _Workers:
    """The shop's pattern workers (``python -m loadtests.workers``), one process group each;
    logs in ``<out>/<name>.log`` (appended to across restarts)."""

    def __init__(self, opts: RunOptions, redis_url: str, db_url: str, out: Path) -> None:
        self.opts, self.redis_url, self.db_url, self.out = opts, redis_url, db_url, out
        self.roles = dict(SHOP_WORKERS)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def setup(self) -> None:
        """Create the shop's tables once, before anything uses them."""
        subprocess.run(
            [sys.executable, "-m", "loadtests.workers", "setup", "--db", self.db_url],
            cwd=ROOT, env=_env({}), check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def log(self, name: str) -> Path:
        return self.out / f"{name}.log"

    def start(self, name: str) -> subprocess.Popen[bytes]:
        args = [
            sys.executable, "-m", "loadtests.workers", self.roles[name], "--name", name,
            "--redis", self.redis_url, "--db", self.db_url,
            "--lease-ms", str(int(self.opts.lease * 1000)),
        ]  # fmt: skip
        extra = {"SHOP_BROKEN": self.opts.broken} if self.opts.broken else {}
        with self.log(name).open("ab") as log:
            proc = subprocess.Popen(
                args, cwd=ROOT, env=_env(extra), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.procs[name] = proc
        return proc

    def start_all(self) -> None:
        for name in self.roles:
            self.start(name)

    def wait_ready(self, names: list[str] | None = None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or list(self.roles):
            proc = self.procs[name]
            while b"ready" not in self.log(name).read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log(name).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} did not start:\n{tail}")
                time.sleep(0.05)

    def active_relay(self) -> str:
        """The relay holding the outbox lease (as it last reported), else relay-1."""
        import redis

        from loadtests.workers import RELAY_ACTIVE

        client = redis.Redis.from_url(self.redis_url, socket_timeout=2)
        try:
            name: Any = client.get(RELAY_ACTIVE)
        finally:
            client.close()
        text = name.decode() if isinstance(name, bytes) else ""
        return text if text in self.procs else "relay-1"

    def stop_all(self) -> None:
        # All at once: stopped one by one, a standby would take over from each in turn.
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            _kill_group(proc, grace=3.0)


def _start_service(
    opts: RunOptions, url: str | None, port: int, log: Path, db_url: str | None = None
) -> subprocess.Popen[bytes]:
    extra = {"PORT": str(port)}
    if url:
        extra["REDIS_URL"] = url
    if db_url:
        extra.update(SHOP_DB=db_url, SHOP_PATTERNS="external")
    if opts.shop:
        extra["SHOP_LEASE"] = str(opts.lease)
        if opts.broken:
            extra["SHOP_BROKEN"] = opts.broken
        args = [
            sys.executable, "-m", "uvicorn", "loadtests.service:app_factory", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(opts.workers),
            "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2",
        ]  # fmt: skip
        cwd = ROOT
    else:
        assert opts.start is not None
        args = shlex.split(opts.start.format(port=port, redis_url=url or "", host="127.0.0.1"))
        cwd = Path.cwd()
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=cwd, env=_env(extra), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _wait_ready(proc: subprocess.Popen[bytes], opts: RunOptions, base: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    path = "/health" if opts.shop else opts.health
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited at start:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.get(base.rstrip("/") + path, timeout=1).status_code
            ready = status == 200 if opts.shop else status < 500
            if ready and (
                not opts.shop or opts.workers == 1 or len(worker_pids(proc.pid)) >= opts.workers
            ):
                return
        time.sleep(0.1)
    raise RuntimeError(f"the service did not answer {path} within 30 s:\n{log.read_text()[-2000:]}")


def _start_locust(opts: RunOptions, base: str, out: Path) -> subprocess.Popen[bytes]:
    locustfile = opts.locustfile or SHOP_LOCUSTFILE
    args = [
        sys.executable, "-m", "locust", "-f", str(locustfile),
        "--headless", "-u", str(opts.users), "-r", str(opts.users),
        "-t", f"{round(opts.duration)}s", "--host", base,
        "--only-summary", "--stop-timeout", "2", "--loglevel", "WARNING",
        "--idem-json", str(out / "result.json"),
    ]  # fmt: skip
    if opts.processes > 1:
        args += ["--processes", str(opts.processes)]
    with (out / "locust.log").open("wb") as log:
        return subprocess.Popen(
            args, cwd=ROOT if opts.shop else Path.cwd(), env=_env({}), stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


class _Faults(threading.Thread):
    """Injects the fault at 40 % of the run; records what it did and when (epoch)."""

    def __init__(
        self,
        opts: RunOptions,
        server: RedisServer | None,
        service: subprocess.Popen[bytes],
        workers: _Workers | None = None,
    ) -> None:
        super().__init__(daemon=True, name="fault-injector")
        self.opts, self.server, self.service, self.workers = opts, server, service, workers
        self.timeline: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self.cancel = threading.Event()
        self._paused: int | None = None

    def note(self, what: str) -> None:
        self.timeline.append((time.time(), what))

    def run(self) -> None:
        try:
            if self.cancel.wait(self.opts.duration * 0.4):
                return
            getattr(self, "_" + (self.opts.fault or "").replace("-", "_"))()
        except BaseException as exc:  # reported by the driver, never lost in the thread
            self.error = exc

    def _restart_redis(self) -> None:
        if self.server is None:
            raise RuntimeError("restart-redis needs the Redis the driver started")
        self.note(f"kill -9 redis-server (port {self.server.port})")
        self.server.kill()
        time.sleep(1.0)
        self.server.process = None
        self.server.start()
        self.note("redis-server restarted from its AOF on the same port")

    def _workers(self, what: str) -> list[int]:
        pids = worker_pids(self.service.pid)
        if not pids:
            raise RuntimeError(
                f"no worker process to {what}: the started service has no child processes "
                "(run it with several workers, e.g. uvicorn --workers 2)"
            )
        return pids

    def _kill_worker(self) -> None:
        pids = self._workers("kill")
        os.kill(pids[0], signal.SIGKILL)
        self.note(f"kill -9 worker {pids[0]} (of {pids})")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.cancel.is_set():
            now = worker_pids(self.service.pid)
            if len(now) >= len(pids) and pids[0] not in now:
                self.note(f"the server replaced it: workers now {now}")
                return
            time.sleep(0.2)

    def _pause_worker(self) -> None:
        pids = self._workers("pause")
        # Past the middleware lease, below uvicorn's 5 s health-check timeout (which would
        # otherwise replace the worker instead of letting it wake up as a zombie).
        pause = self.opts.lease + 1.5
        self._paused = pids[0]
        os.kill(pids[0], signal.SIGSTOP)
        self.note(f"SIGSTOP worker {pids[0]} for {pause:.1f} s (lease {self.opts.lease} s)")
        try:
            self.cancel.wait(pause)
        finally:
            self.resume()

    def resume(self) -> None:
        pid, self._paused = self._paused, None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
            self.note(f"SIGCONT {self._paused_name} {pid}")

    _paused_name = "worker"

    # -- the shop's pattern workers, each stopped at its fault point ---------------------------

    def _kill_orchestrator(self) -> None:
        self._kill_at("orchestrator-1", "right after a charge ran, before the saga log knows")

    def _pause_orchestrator(self) -> None:
        self._pause_at("orchestrator-1", "right after a charge ran, before the saga log knows")

    def _kill_relay(self) -> None:
        self._kill_at(self._shop().active_relay(), "between publishing a batch and marking it")

    def _pause_relay(self) -> None:
        self._pause_at(self._shop().active_relay(), "between publishing a batch and marking it")

    def _kill_consumer(self) -> None:
        self._kill_at("consumer-1", "between applying an event and acknowledging it")

    def _shop(self) -> _Workers:
        if self.workers is None:
            raise RuntimeError("pattern faults need the shop's worker processes")
        return self.workers

    def _kill_at(self, name: str, where: str) -> None:
        workers = self._shop()
        proc = workers.procs[name]
        os.kill(proc.pid, signal.SIGUSR1)
        try:
            code = proc.wait(5.0)
            self.note(f"kill -9 {name} ({proc.pid}) at its fault point, {where} (exit {code})")
        except subprocess.TimeoutExpired:
            _kill_group(proc, grace=0.0)
            self.note(f"kill -9 {name} ({proc.pid}): no fault point reached in 5 s, killed as is")
        if self.cancel.wait(1.0):
            workers.start(name)
            return
        new = workers.start(name)
        workers.wait_ready([name])
        self.note(f"{name} restarted (pid {new.pid})")

    def _pause_at(self, name: str, where: str) -> None:
        proc = self._shop().procs[name]
        pause = self.opts.lease + 1.5  # past the lease: another worker takes over meanwhile
        os.kill(proc.pid, signal.SIGUSR2)
        self._paused, self._paused_name = proc.pid, name
        deadline = time.monotonic() + 5.0
        while _state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        if _state(proc.pid) == "T":
            self.note(f"SIGSTOP {name} ({proc.pid}) at its fault point, {where}, for {pause:.1f} s")
        else:
            os.kill(proc.pid, signal.SIGSTOP)
            self.note(f"SIGSTOP {name} ({proc.pid}): no fault point reached in 5 s, stopped as is")
        try:
            self.cancel.wait(pause)
        finally:
            self.resume()


def _state(pid: int) -> str:
    """The process state letter from /proc (``T``: stopped), or '' when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _describe(opts: RunOptions, server: RedisServer | None, base: str) -> str:
    if opts.shop:
        where = "the embedded store" if opts.embedded else "a throwaway redis-server with AOF"
        broken = f", planted defect `SHOP_BROKEN={opts.broken}`" if opts.broken else ""
        if opts.embedded:
            patterns = "saga orchestrator, outbox relay and read-model consumer in the worker"
        else:
            db = "a throwaway PostgreSQL" if opts.database is None else f"`{opts.database}`"
            patterns = (
                f"orders and outbox in {db}; 2 saga orchestrators, 2 outbox relays and 2 "
                "read-model consumers as processes of their own"
            )
        service = (
            f"Service: the shop (`loadtests/service.py`) on uvicorn, {opts.workers} worker(s), "
            f"{where}; {patterns}; leases {opts.lease:g} s{broken}."
        )
    elif opts.start:
        redis = f", with a throwaway redis-server on :{server.port}" if server else ""
        service = f"Service: `{opts.start}` at {base}{redis}."
    else:
        service = f"Service: {base} (already running)."
    locustfile = opts.locustfile or SHOP_LOCUSTFILE
    with contextlib.suppress(ValueError):
        locustfile = locustfile.resolve().relative_to(ROOT)
    return (
        f"{service} {opts.users} Locust users for {opts.duration:g} s (`{locustfile}`)"
        + (f", {opts.processes} Locust processes" if opts.processes > 1 else "")
        + (f"; fault `{opts.fault}` at 40 % of the run." if opts.fault else ".")
    )


def run(opts: RunOptions, echo: Echo = print) -> Outcome:
    """One bounded run; returns the outcome and writes the report (never raises on a
    violation: ``outcome.ok`` says whether the run verified)."""
    opts.check()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = opts.out_dir or _out_root() / f"{stamp}-{opts.fault or 'no-fault'}"
    out.mkdir(parents=True, exist_ok=True)
    result_path = out / "result.json"
    result_path.unlink(missing_ok=True)
    service: subprocess.Popen[bytes] | None = None
    locust: subprocess.Popen[bytes] | None = None
    faults: _Faults | None = None
    workers: _Workers | None = None
    locust_exit: int | None = None
    with _redis(opts) as server, _database(opts) as db_url:
        try:
            port = free_port()
            base = (opts.target or "http://127.0.0.1:{port}").format(port=port)
            description = _describe(opts, server, base)
            echo(description)
            if db_url is not None:
                assert server is not None
                workers = _Workers(opts, server.url, db_url, out)
                workers.setup()
                workers.start_all()
            if opts.start is not None or opts.shop:
                service = _start_service(
                    opts, server.url if server else None, port, out / "service.log", db_url
                )
                _wait_ready(service, opts, base, out / "service.log")
            if workers is not None:
                workers.wait_ready()
            locust = _start_locust(opts, base, out)
            if opts.fault:
                assert service is not None
                faults = _Faults(opts, server, service, workers)
                faults.start()
            try:
                locust_exit = locust.wait(opts.duration + 60)
            except subprocess.TimeoutExpired:
                echo("locust overran its time budget: killed")
            if faults is not None:
                faults.cancel.set()
                faults.join(15)
                faults.resume()
                if faults.error is not None:
                    raise RuntimeError(f"fault injection failed: {faults.error}")
        finally:
            _kill_group(locust)
            _kill_group(service)
            if faults is not None:
                faults.resume()
            if workers is not None:
                workers.stop_all()
    result = _read_result(result_path, out / "locust.log")
    timeline = faults.timeline if faults else []
    t0 = float(result.get("started") or 0)
    for at, what in timeline:
        echo(f"fault @{at - t0:5.1f}s: {what}")
    result.update(
        title=f"{'the shop' if opts.shop else base}, {opts.fault or 'no fault'}",
        command=opts.command or command_line(opts),
        service=description,
        timeline=timeline,
    )
    verification = Verification.from_dict(result.get("verification", {}))
    outcome = Outcome(opts, out, verification, result, timeline, locust_exit=locust_exit)
    outcome.report = write_report(result, opts.report or out / "report.md")
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
    for line in verification.lines():
        echo(line)
    echo(f"report: {outcome.report}")
    return outcome


def _out_root() -> Path:
    # loadtests/out/ in a source checkout (ignored by git); ./loadtests-out/ when installed.
    if (ROOT / "pyproject.toml").exists():
        return ROOT / "loadtests" / "out"
    return Path.cwd() / "loadtests-out"


def _read_result(path: Path, log: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return doc
    except (OSError, ValueError):
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
        failed = Verification()
        failed.fail("locust-failed", f"Locust wrote no result; the end of its log:\n{tail}")
        return {"verification": failed.to_dict()}


def command_line(opts: RunOptions) -> str:
    parts = ["python", "-m", "loadtests", "run", "--duration", f"{opts.duration:g}s"]
    if opts.fault:
        parts += ["--fault", opts.fault]
    if opts.target:
        parts += ["--target", opts.target]
    if opts.start:
        parts += ["--start", opts.start]
    if opts.locustfile:
        parts += ["--locustfile", str(opts.locustfile)]
    if opts.shop:
        parts += ["--workers", str(opts.workers)]
    parts += ["--users", str(opts.users)]
    if opts.embedded:
        parts.append("--embedded")
    if opts.database:
        parts += ["--database", opts.database]
    return shlex.join(parts)
