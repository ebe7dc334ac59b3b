"""Failover benchmark: what killing a primary does to idempotency records, lock grants and
fencing tokens, on Redis Cluster and on Sentinel, with and without waiting for replicas.

One *scenario* is one fresh deployment (a Cluster of 3 primaries with a replica each, or a
Sentinel group of a primary, a replica and 3 sentinels), under a bounded load:

- HTTP: 16 clients send POSTs with fresh ``Idempotency-Key`` values to a Starlette app
  behind :class:`~idemkit.middleware.IdempotencyMiddleware` (auto-pipelined store, lease
  2 s) whose handler counts its executions per key;
- locks: 10 holders each take a :class:`~idemkit.lock.FencedLock` (lease 5 s, watchdog on)
  whose record lives on the primary that will be killed.

Then that primary is SIGKILLed and a replica promoted. With ``lag``, the replica was cut off
0.3 s before the kill: stopped (SIGSTOP) and its replication connection closed by the primary
(``CLIENT KILL TYPE replica``), so everything the primary acknowledged in those 0.3 s exists
nowhere else (stopping it alone is not enough: what the primary already sent waits in the
replica's socket buffer and arrives when it continues). It continues right after the kill. After the
promotion every key that got an answer is retried once its lease is over; a key whose handler
runs again had its completion lost. Lock contenders try every lock after the kill; one that
gets a lock while its first holder still believes it holds it is a two-holder window. Both
then write to a fence on a separate, stable Redis, stale writer last.

Counted: answers by status (503 during the switch, never 500), completions acknowledged as
``executed`` and lost, 2xx answers whose key ran again, two-holder windows, token
regressions (a contender's token not above the first holder's), stale fenced writes
accepted. ``replicas=1`` waits for one replica (``WAIT 1 100``) before a completion, grant or
renewal is acknowledged. Before the retries the killed server is started again and rejoins
as a replica of the new primary (until then, with ``replicas=1``, nothing can be
acknowledged: the new primary has no replica). The option's cost is measured apart, without
failover: completion cycles (claim + complete) of 64 concurrent tasks through the
auto-pipelined store.

Run: ``.venv/bin/python -m bench failover`` (``--quick``: one run per row). Starts its own
servers on free loopback ports; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import logging
import signal
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.report import machine_summary, write_section
from idemkit.errors import (
    LockTimeoutError,
    ReplicationTimeoutError,
    StaleTokenError,
    StoreUnavailableError,
)
from idemkit.fence import Fence
from idemkit.lease import LeaseStore
from idemkit.lock import FencedLock
from idemkit.middleware import IdempotencyMiddleware, as_lease_store
from idemkit.observe import Event
from idemkit.pipeline import PipelinedLeaseStore
from idemkit.testing import RedisCluster, RedisServer, SentinelGroup
from idemkit.testing.sentinel import aclose_client

COMMAND = ".venv/bin/python -m bench failover"
TOPOLOGIES = ("cluster", "sentinel")
REPLICA_TIMEOUT_MS = 100
HTTP_CLIENTS = 16
HTTP_LEASE_S = 2.0
LOCKS = 10
LOCK_LEASE_MS = 5_000
LAG_S = 0.3
MAX_REQUESTS = 2_000  # per HTTP client and run: a bound besides the time
COST_SLICES = 20

_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("failover_key", default=None)


# -- deployments -----------------------------------------------------------------------------------


class Deployment:
    """A fresh Cluster or Sentinel group with what the scenario needs to know about it."""

    def __init__(self, topology: str) -> None:
        self.topology = topology
        self.cluster: RedisCluster | None = None
        self.group: SentinelGroup | None = None
        if topology == "cluster":
            self.cluster = RedisCluster(replicas=1, node_timeout_ms=500)
        elif topology == "sentinel":
            self.group = SentinelGroup(down_after_ms=500)
        else:
            raise ValueError(f"unknown topology {topology!r}")

    def __enter__(self) -> Deployment:
        if self.cluster is not None:
            self.cluster.__enter__()
        elif self.group is not None:
            self.group.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cluster is not None:
            self.cluster.close()
        if self.group is not None:
            self.group.close()

    def client(self) -> Any:
        # Short socket timeouts: a dead primary must turn into errors quickly, not hangs.
        options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        if self.cluster is not None:
            return self.cluster.async_client(**options)
        assert self.group is not None
        return self.group.async_client(**options)

    async def close_client(self, client: Any) -> None:
        if self.group is not None:
            await aclose_client(client)
        else:
            await client.aclose()

    def victim(self) -> RedisServer:
        """The primary that will be killed (on a Cluster: the one serving ``{victim}``)."""
        if self.cluster is not None:
            return self.cluster.primary_for("{victim}")
        assert self.group is not None
        return self.group.primary()

    def replica(self, victim: RedisServer) -> RedisServer:
        if self.cluster is not None:
            return self.cluster.replicas_of(victim)[0]
        assert self.group is not None
        return next(s for s in self.group.servers if s is not victim)

    def cut_off(self, replica: RedisServer, primary: RedisServer) -> None:
        """Stop ``replica`` and drop its replication link, so it misses what follows."""
        replica.pause()
        admin = redis.Redis(port=primary.port, socket_timeout=2)
        try:
            admin.client_kill_filter(_type="replica")
        finally:
            admin.close()

    def on_victim(self, name: str) -> bool:
        """Whether a lock named ``name`` (its hash tag) lives on the victim."""
        if self.cluster is None:
            return True
        return self.cluster.primary_for("{" + name + "}").port == self.victim().port

    def restart(self, victim: RedisServer) -> None:
        """Start the killed primary again: it rejoins as a replica of the new primary."""
        if self.cluster is not None:
            self.cluster.restart(victim, timeout=30)
        else:
            assert self.group is not None
            self.group.restart(victim, timeout=30)

    def wait_promotion(self, victim: RedisServer) -> None:
        if self.cluster is not None:
            self.cluster.wait_for_failover(victim, timeout=30)
        else:
            assert self.group is not None
            self.group.wait_for_promotion(victim, timeout=30)


# -- the HTTP side ---------------------------------------------------------------------------------


@dataclass
class HttpLoad:
    runs: Counter[str] = field(default_factory=Counter)
    first: dict[str, int] = field(default_factory=dict)  # key -> status of its first answer
    outcome: dict[str, str] = field(default_factory=dict)  # key -> the request's event outcome
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    sent: int = 0


def _app(store: Any, load: HttpLoad) -> Any:
    async def pay(request: Request) -> Response:
        key = request.headers["idempotency-key"]
        load.runs[key] += 1
        return JSONResponse({"key": key, "run": load.runs[key]}, status_code=201)

    def observe(event: Event) -> None:
        key = _key.get()
        if key is not None and event.name == "idempotency.request":
            load.outcome.setdefault(key, event.outcome)

    inner = Starlette(
        routes=[Route("/pay", pay, methods=["POST"])],
        middleware=[
            Middleware(
                IdempotencyMiddleware,
                store=store,
                lease=HTTP_LEASE_S,
                store_timeout=0.5,
                observer=observe,
            )
        ],
    )

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # The observer runs in the request's task: the key travels in a context variable.
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            _key.set(headers.get(b"idempotency-key", b"").decode() or None)
        await inner(scope, receive, send)

    return app


@contextlib.asynccontextmanager
async def _http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        yield client


async def _http_client(
    http: httpx.AsyncClient,
    load: HttpLoad,
    worker: int,
    stop: asyncio.Event,
    limit: int,
    interval: float,
) -> None:
    for i in range(limit):
        if stop.is_set():
            return
        if interval:
            await asyncio.sleep(interval)
        key = f"w{worker}-{i}"
        started = time.monotonic()
        response = await http.post("/pay", content=b"{}", headers={"Idempotency-Key": key})
        load.latencies.append(time.monotonic() - started)
        load.sent += 1
        load.statuses[response.status_code] += 1
        load.first[key] = response.status_code


async def _retry_all(http: httpx.AsyncClient, load: HttpLoad) -> tuple[int, int, int, int]:
    """Retry every key once its lease is over: (acked lost, 2xx lost, wrong replays, keys
    still failing (503) or still in flight (409))."""
    counts = Counter[str]()
    pending = list(load.first.items())

    async def retry(key: str, status: int) -> None:
        before = load.runs[key]
        response = None
        for _ in range(5):
            response = await http.post("/pay", content=b"{}", headers={"Idempotency-Key": key})
            if response.status_code != 503:
                break
            await asyncio.sleep(0.1)
        assert response is not None
        if response.status_code in (503, 409):
            counts["failing"] += 1
            return
        ran_again = load.runs[key] > before and before > 0
        if 200 <= status < 300 and ran_again:
            counts["ok_lost"] += 1
            if load.outcome.get(key) == "executed":
                counts["acked_lost"] += 1
        if response.status_code == 201 and response.json().get("run") != 1 and not ran_again:
            counts["wrong"] += 1  # a replay of something else than the first run

    async def worker() -> None:
        while pending:
            await retry(*pending.pop())

    await asyncio.gather(*(worker() for _ in range(HTTP_CLIENTS)))
    return counts["acked_lost"], counts["ok_lost"], counts["wrong"], counts["failing"]


# -- the lock side ---------------------------------------------------------------------------------


@dataclass
class LockResult:
    granted: int = 0  # first holders that got their lock
    refused: int = 0  # first holders whose grant no replica confirmed (replicas=1)
    contended: int = 0  # contenders that got a lock after the failover
    windows: int = 0  # ... while its first holder still believed it held it
    regressions: int = 0  # ... with a token not above the first holder's
    stale_accepted: int = 0  # fenced writes of a first holder accepted after the contender's


async def _first_grant(holder: FencedLock) -> bool:
    try:
        # With replicas=1 and the replica cut off, one 100 ms wait and the grant is refused.
        await holder.acquire(timeout=0.05)
    except StoreUnavailableError:  # ReplicationTimeoutError: no replica confirmed it
        return False
    return True


def _lock_names(deployment: Deployment) -> list[str]:
    names: list[str] = []
    i = 0
    while len(names) < LOCKS and i < 10_000:
        name = f"job-{i}"
        if deployment.on_victim(name):
            names.append(name)
        i += 1
    return names


# -- one scenario ----------------------------------------------------------------------------------


@dataclass
class Scenario:
    topology: str
    replicas: int
    lag: bool
    time_floor: bool = True
    load_s: float = 1.0
    clients: int = HTTP_CLIENTS
    interval_s: float = 0.0  # pause of each HTTP client between its requests


@dataclass
class Outcome:
    scenario: Scenario
    failover_s: float
    statuses: Counter[int]
    executed: int
    acked_lost: int
    ok_lost: int
    wrong_replays: int
    still_failing: int
    locks: LockResult

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


async def run_scenario(scenario: Scenario) -> Outcome:
    with Deployment(scenario.topology) as deployment, RedisServer() as fence_server:
        return await _run(deployment, fence_server, scenario)


async def _run(deployment: Deployment, fence_server: RedisServer, scenario: Scenario) -> Outcome:
    client = deployment.client()
    fence_client = aioredis.Redis(port=fence_server.port)
    wait = {"replicas": scenario.replicas, "replica_timeout_ms": REPLICA_TIMEOUT_MS}
    load = HttpLoad()
    locks = LockResult()
    victim = deployment.victim()
    replica = deployment.replica(victim)
    names = _lock_names(deployment)
    holders = [
        FencedLock(
            client,
            name,
            lease_ms=LOCK_LEASE_MS,
            watchdog=True,
            time_floor=scenario.time_floor,
            **wait,
        )
        for name in names
    ]
    fence = Fence(fence_client)
    store = as_lease_store(client, **wait)
    stop = asyncio.Event()
    try:
        async with _http(_app(store, load)) as http:
            workers = [
                asyncio.create_task(
                    _http_client(http, load, w, stop, MAX_REQUESTS, scenario.interval_s)
                )
                for w in range(scenario.clients)
            ]
            await asyncio.sleep(scenario.load_s / 2)
            if scenario.lag:
                deployment.cut_off(replica, victim)
                await asyncio.sleep(LAG_S / 2)
            granted = await asyncio.gather(*(_first_grant(holder) for holder in holders))
            locks.granted = sum(granted)
            locks.refused = len(granted) - locks.granted
            if scenario.lag:
                await asyncio.sleep(LAG_S / 2)
            killed_at = time.monotonic()
            victim.kill()
            if scenario.lag:
                replica.resume()
            await asyncio.to_thread(deployment.wait_promotion, victim)
            failover_s = time.monotonic() - killed_at
            contenders = await _contend(client, names, holders, scenario, wait, fence, locks)
            await asyncio.sleep(scenario.load_s / 2)
            stop.set()
            await asyncio.gather(*workers)
            # The new primary has no replica until the old one is back (as its replica): with
            # replicas=1 nothing would be acknowledged until then.
            await asyncio.to_thread(deployment.restart, victim)
            # Leases of requests interrupted by the failover end; background completions
            # finish (or give up) with them.
            await asyncio.sleep(HTTP_LEASE_S + 0.3)
            acked_lost, ok_lost, wrong, failing = await _retry_all(http, load)
            for lock in [*holders, *contenders]:
                with contextlib.suppress(Exception):
                    await lock.release()
    finally:
        stop.set()
        if isinstance(store, PipelinedLeaseStore):
            await store.aclose()  # on a Cluster: the dead node's connections too
        await deployment.close_client(client)
        await fence_client.aclose()
    executed = sum(1 for outcome in load.outcome.values() if outcome == "executed")
    return Outcome(
        scenario=scenario,
        failover_s=failover_s,
        statuses=load.statuses,
        executed=executed,
        acked_lost=acked_lost,
        ok_lost=ok_lost,
        wrong_replays=wrong,
        still_failing=failing,
        locks=locks,
    )


async def _contend(
    client: Any,
    names: list[str],
    holders: list[FencedLock],
    scenario: Scenario,
    wait: dict[str, int],
    fence: Fence,
    locks: LockResult,
) -> list[FencedLock]:
    """After the promotion: a contender per lock tries to take it (briefly: a surviving grant
    is renewed by its holder's watchdog and stays busy)."""
    contenders = [
        FencedLock(client, name, lease_ms=LOCK_LEASE_MS, time_floor=scenario.time_floor, **wait)
        for name in names
    ]

    async def contend(holder: FencedLock, contender: FencedLock) -> None:
        try:
            token = await contender.acquire(timeout=1.0)
        except (LockTimeoutError, StoreUnavailableError):
            return
        locks.contended += 1
        first = getattr(holder, "_token", None)
        if holder.held:
            locks.windows += 1
        if first is not None and token <= first:
            locks.regressions += 1
        resource = f"res-{contender.name}"
        with contextlib.suppress(StaleTokenError):
            await fence.write(resource, token, {"by": "contender"})
        if first is not None:
            try:
                await fence.write(resource, first, {"by": "first holder"})
                locks.stale_accepted += 1
            except StaleTokenError:
                pass

    await asyncio.gather(*(contend(h, c) for h, c in zip(holders, contenders, strict=True)))
    return contenders


# -- the option's cost -----------------------------------------------------------------------------


@dataclass
class Cost:
    topology: str
    replicas: int
    pipelined: bool
    cycles_per_s: float
    p50_ms: float
    p99_ms: float
    alone_p50_ms: float  # one cycle of a lone client: what the wait adds to a request
    unconfirmed: int  # completions no replica confirmed within the timeout (applied anyway)


async def _cycles(
    store: LeaseStore, seconds: float, tasks: int, into: list[float]
) -> tuple[int, int]:
    """Claim + complete cycles of ``tasks`` concurrent tasks for ``seconds``; latencies are
    appended to ``into``. Returns (cycles, completions no replica confirmed in time)."""
    unconfirmed = cycles = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal unconfirmed, cycles
        while time.monotonic() < deadline:
            key = store.record_key(f"cost-{next(_counter)}")
            started = time.monotonic()
            claim = await store.claim(key, b"fp", 5_000, 60_000)
            try:
                await store.complete(key, claim.token, b"result", 60_000)
            except ReplicationTimeoutError:
                unconfirmed += 1
            into.append(time.monotonic() - started)
            cycles += 1

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return cycles, unconfirmed


_counter = iter(range(1_000_000_000))


async def measure_costs(topology: str, slices: int = COST_SLICES) -> list[Cost]:
    """The four variants (auto-pipelined or not, WAIT or not) on one deployment, taking
    turns in short slices, the order rotating, so background load hits all alike."""
    variants = [(pipelined, replicas) for pipelined in (True, False) for replicas in (0, 1)]
    busy: dict[tuple[bool, int], list[float]] = {v: [] for v in variants}
    alone: dict[tuple[bool, int], list[float]] = {v: [] for v in variants}
    counts: dict[tuple[bool, int], list[int]] = {v: [0, 0, 0] for v in variants}
    with Deployment(topology) as deployment:
        client = deployment.client()
        stores: dict[tuple[bool, int], LeaseStore] = {}
        try:
            for pipelined, replicas in variants:
                kind = PipelinedLeaseStore if pipelined else LeaseStore
                store = kind(client, replicas=replicas, replica_timeout_ms=REPLICA_TIMEOUT_MS)
                await _cycles(store, 0.2, 8, [])  # scripts loaded on every node
                stores[(pipelined, replicas)] = store
            for i in range(slices):
                for variant in variants[i % 4 :] + variants[: i % 4]:
                    started = time.monotonic()
                    cycles, unconfirmed = await _cycles(stores[variant], 0.2, 64, busy[variant])
                    counts[variant][0] += cycles
                    counts[variant][1] += unconfirmed
                    counts[variant][2] += int((time.monotonic() - started) * 1e6)
                    await _cycles(stores[variant], 0.05, 1, alone[variant])
        finally:
            for store in stores.values():
                if isinstance(store, PipelinedLeaseStore):
                    await store.aclose()
            await deployment.close_client(client)
    costs = []
    for (pipelined, replicas), latencies in busy.items():
        latencies.sort()
        cycles, unconfirmed, micros = counts[(pipelined, replicas)]
        costs.append(
            Cost(
                topology=topology,
                replicas=replicas,
                pipelined=pipelined,
                cycles_per_s=cycles / (micros / 1e6),
                p50_ms=statistics.median(latencies) * 1000,
                p99_ms=latencies[int(len(latencies) * 0.99) - 1] * 1000,
                alone_p50_ms=statistics.median(alone[(pipelined, replicas)]) * 1000,
                unconfirmed=unconfirmed,
            )
        )
    return costs


# -- the report ------------------------------------------------------------------------------------


def _row(outcomes: list[Outcome]) -> str:
    s = outcomes[0].scenario
    total: Callable[[Callable[[Outcome], int]], int] = lambda f: sum(f(o) for o in outcomes)  # noqa: E731
    statuses: Counter[int] = Counter()
    for o in outcomes:
        statuses.update(o.statuses)
    requests = sum(statuses.values())
    failover = statistics.median(o.failover_s for o in outcomes)
    other = sum(n for st, n in statuses.items() if st not in (201, 503, 409))
    return (
        f"| {s.topology} | {'cut off 0.3 s' if s.lag else 'in sync'} | "
        f"{'WAIT 1' if s.replicas else 'off'}{'' if s.time_floor else ', no time floor'} | "
        f"{failover:.1f} s | {requests:,} | {statuses[503]:,} | {statuses[409]:,} | {other} | "
        f"{total(lambda o: o.executed):,} | {total(lambda o: o.acked_lost)} | "
        f"{total(lambda o: o.ok_lost)} | "
        f"{total(lambda o: o.locks.granted)}/{total(lambda o: o.locks.granted + o.locks.refused)}"
        f" | {total(lambda o: o.locks.windows)} | {total(lambda o: o.locks.regressions)} | "
        f"{total(lambda o: o.locks.stale_accepted)} |"
    )


def scenarios(quick: bool) -> list[Scenario]:
    rows = [
        Scenario(topology, replicas, lag)
        for topology in TOPOLOGIES
        for lag in (False, True)
        for replicas in (0, 1)
    ]
    # What the time floor on tokens buys: the same lost grants without it.
    rows += [Scenario(topology, 0, True, time_floor=False) for topology in TOPOLOGIES]
    return rows


def main(argv: list[str]) -> None:
    # The scenarios provoke every warning idemkit has; the table says what happened.
    logging.getLogger("idemkit").setLevel(logging.CRITICAL)
    # Stopped with SIGTERM: unwind, so every server started here is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(prog="python -m bench failover")
    parser.add_argument("--quick", action="store_true", help="one run per row")
    parser.add_argument("--runs", type=int, default=3, help="runs per row (default 3)")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    rows = []
    for scenario in scenarios(args.quick):
        outcomes = []
        for _ in range(runs):
            outcome = asyncio.run(run_scenario(scenario))
            outcomes.append(outcome)
            print(
                f"  {scenario}: {dict(outcome.statuses)} lost={outcome.acked_lost}/"
                f"{outcome.ok_lost} locks={outcome.locks}",
                flush=True,
            )
        rows.append(_row(outcomes))
    write_section("failover", _markdown(runs, rows, ["| (cost not measured yet) |"]))
    cost_rows = []
    for topology in TOPOLOGIES:
        costs = asyncio.run(measure_costs(topology))
        for pipelined in (True, False):
            base, waited = (
                next(c for c in costs if c.pipelined == pipelined and c.replicas == r)
                for r in (0, 1)
            )
            store = "auto-pipelined" if pipelined else "not pipelined"
            cost_rows.append(
                f"| {topology} | {store} | {base.cycles_per_s:,.0f} | "
                f"{waited.cycles_per_s:,.0f} | {waited.cycles_per_s / base.cycles_per_s:.2f}x | "
                f"{base.p50_ms:.2f} / {base.p99_ms:.2f} | "
                f"{waited.p50_ms:.2f} / {waited.p99_ms:.2f} | "
                f"{base.alone_p50_ms:.2f} / {waited.alone_p50_ms:.2f} | {waited.unconfirmed:,} |"
            )
    markdown = _markdown(runs, rows, cost_rows)
    write_section("failover", markdown)
    print(markdown)


def _markdown(runs: int, rows: list[str], cost_rows: list[str]) -> str:
    return "\n".join(
        [
            "## Failover: Cluster and Sentinel (`bench/failover.py`)",
            "",
            f"Command: `{COMMAND}` ({runs} run(s) per row, numbers summed over them); "
            f"machine: {machine_summary()}.",
            "",
            "Each run: a fresh Cluster (3 primaries + 3 replicas, `cluster-node-timeout 500`)"
            " or Sentinel group (primary, replica, 3 sentinels, `down-after-milliseconds"
            " 500`); 16 HTTP clients send fresh keys through the middleware (lease 2 s,"
            " `store_timeout` 0.5 s) for about 1 s around the failover, and 10 fenced locks"
            " whose records live on the primary are taken; then that primary is SIGKILLed."
            " *Replica cut off*: 0.3 s before the kill the replica was stopped and its"
            " replication link closed, so it misses what the primary acknowledged in those"
            " 0.3 s, as a replica that far behind would. After the promotion a contender"
            " tries each lock; the killed server is restarted as the new primary's replica;"
            " every key that was answered is retried once its lease is over.",
            "",
            "Columns: *requests* sent during the load, answered *503* (store unavailable:"
            " retry) or *409* (in flight); *other* = any other status than 201/503/409 (a"
            " 500 would be one; there are none); *executed* = completions acknowledged by"
            " the store (outcome `executed`); *acked lost* = of those, keys whose handler"
            " ran again on the retry; *2xx lost* = any key answered 201 whose handler ran"
            " again (with WAIT, a completion whose replica did not confirm in time is still"
            " answered, reported `store_failed`); *grants* = first holders granted / tried;"
            " *two holders* = contenders that got a lock its first holder still believed"
            " it held; *regressions* = contender tokens not above the first holder's;"
            " *stale accepted* = the first holder's fenced write accepted after the"
            " contender's (fence on a separate Redis). *requests* is not a throughput"
            " comparison: with WAIT, requests to the promoted primary wait 100 ms and are"
            " answered `store_failed` until its replica is back.",
            "",
            "| topology | replica | replicas option | failover | requests | 503 | 409 | other "
            "| executed | acked lost | 2xx lost | grants | two holders | regressions "
            "| stale accepted |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: | ---: | ---: |",
            *rows,
            "",
            "### The option's cost (no failover)",
            "",
            "64 concurrent tasks run claim + complete cycles through the store the"
            " middleware uses (auto-pipelined: on a Cluster one batcher per primary) and"
            " through the plain `LeaseStore` (one redis-py call per operation); with"
            f" `replicas=1, replica_timeout_ms={REPLICA_TIMEOUT_MS}` a completion is followed"
            " by `WAIT 1 100` on the same connection, once per batch when pipelined. Latency"
            " is one cycle (two round trips); *alone* is the median cycle of one client by"
            " itself, what the wait adds to one request. The four variants take turns on one"
            f" deployment in {COST_SLICES} slices of 0.2 s each (plus 0.05 s alone), the order"
            " rotating, so load from other processes hits them alike; the machine is shared,"
            " and differences of 10-20 % in cycles/s are still noise.",
            "",
            "| topology | store | cycles/s, off | cycles/s, WAIT 1 | ratio | p50 / p99 ms, off "
            "| p50 / p99 ms, WAIT 1 | alone p50 ms, off / WAIT 1 | unconfirmed |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            *cost_rows,
            "",
            "*unconfirmed*: completions with WAIT 1 whose replica did not answer within 100 ms"
            " (`ReplicationTimeoutError`: applied on the primary, not acknowledged): on a"
            " loaded machine a replica can take that long.",
        ]
    )


if __name__ == "__main__":
    main(sys.argv[1:])
