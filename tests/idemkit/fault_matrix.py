"""The fault matrix: what a keyed request sees while Redis fails, for three client setups.

Each scenario starts its own redis-server, runs the middleware over the test shop, sends a
request whose handler is in flight when the fault strikes, measures how long a new keyed
request takes to get its answer during the fault, recovers, and retries the in-flight key.

``test_fault_matrix.py`` asserts the guarantees on the result; ``python -m
tests.idemkit.fault_matrix --write README.md`` (``make fault-table``) reruns it and rewrites
the README's failure table between its markers, so the table is what was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from idemkit.testing import RedisServer
from tests.idemkit.shop import Shop, client

STORE_TIMEOUT = 1.0
LEASE = 8.0
PAUSE = 5.0

CLIENTS: dict[str, Callable[[str], aioredis.Redis]] = {
    "redis-py defaults": lambda url: aioredis.Redis.from_url(url),
    "README client": lambda url: aioredis.Redis.from_url(url, socket_timeout=1.0),
    "NoBackoff": lambda url: aioredis.Redis.from_url(
        url, socket_timeout=1.0, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1)
    ),
}

FAULTS = {
    "paused": f"Redis paused (SIGSTOP) for {PAUSE:.0f} s",
    "killed": "Redis killed (SIGKILL), back from AOF after 1 s",
    "restarted-empty": "Redis restarted without AOF",
    "oom": "out of memory under noeviction",
    "evicting": "maxmemory-policy allkeys-lru",
}


@dataclass
class Row:
    fault: str
    client: str
    answer: int = 0  # status of a new keyed request during the fault
    seconds: float = 0.0  # how long that answer took
    in_flight_status: int = 0  # the in-flight request's own answer
    retry: str = ""  # what a retry of the in-flight key got after recovery
    executions: int = 0  # how often the in-flight key's handler ran
    events: list[str] = field(default_factory=list)


async def scenario(fault: str, client_name: str) -> Row:
    row = Row(fault, client_name)
    extra = ["--maxmemory-policy", "allkeys-lru"] if fault == "evicting" else []
    if fault == "oom":
        extra = ["--maxmemory-policy", "noeviction"]
    server = RedisServer(appendonly=fault != "restarted-empty", extra_args=extra).start()
    store = CLIENTS[client_name](server.url)
    admin = aioredis.Redis.from_url(server.url)
    shop = Shop()
    events: list[Any] = []
    app = shop.app(store=store, lease=LEASE, store_timeout=STORE_TIMEOUT, observer=events.append)
    try:
        async with client(app) as c:

            async def post(key: str) -> Any:
                return await c.post(
                    "/payments", content=key.encode(), headers={"Idempotency-Key": key}
                )

            if fault == "evicting":
                started = time.monotonic()
                during = await post("during")
                row.answer, row.seconds = during.status_code, time.monotonic() - started
                row.retry = "refused (503 store-evicts)" if during.status_code == 503 else "served"
                row.executions = shop.calls["pay"]
                return row
            await post("warm")  # connection, scripts and the eviction check in place
            shop.gate, shop.entered = asyncio.Event(), asyncio.Event()
            first = asyncio.create_task(post("in-flight"))
            await shop.entered.wait()
            await _inject(fault, server, admin)
            started = time.monotonic()
            during = await post("during")
            row.answer, row.seconds = during.status_code, time.monotonic() - started
            shop.gate.set()
            if fault == "paused":
                await asyncio.sleep(max(0.0, PAUSE - (time.monotonic() - started)))
                server.resume()
            row.in_flight_status = (await first).status_code
            await _recover(fault, server, admin)
            await asyncio.sleep(2.5)  # background completion retries land (lease is 8 s)
            retry = await post("in-flight")
            replayed = retry.headers.get("idempotent-replayed") == "true"
            row.retry = "replayed" if replayed else f"ran again ({retry.status_code})"
            row.executions = shop.bodies[b"in-flight"]
            row.events = [
                f"{e.name.split('.')[-1]}:{e.outcome}"
                for e in events
                if e.name != "idempotency.store"
            ]
    finally:
        server.resume()
        await store.aclose()
        await admin.aclose()
        server.close()
    return row


async def _inject(fault: str, server: RedisServer, admin: aioredis.Redis) -> None:
    if fault == "paused":
        server.pause()
    elif fault in ("killed", "restarted-empty"):
        await asyncio.to_thread(server.kill)
    elif fault == "oom":
        # Memory full: a maxmemory below what is used makes Redis refuse every write with
        # OOM, as a full instance does, without racing the fill against the limit.
        await admin.config_set("maxmemory", "1")


async def _recover(fault: str, server: RedisServer, admin: aioredis.Redis) -> None:
    if fault == "killed":
        await asyncio.sleep(1.0)
        server.process = None
        await asyncio.to_thread(server.start)
    elif fault == "restarted-empty":
        server.process = None
        await asyncio.to_thread(server.start)
    elif fault == "oom":
        await admin.config_set("maxmemory", "0")


async def matrix(faults: list[str] | None = None) -> list[Row]:
    """Every fault for every client setup (the client setups of one fault in parallel)."""
    rows: list[Row] = []
    for fault in faults or list(FAULTS):
        rows += await asyncio.gather(*(scenario(fault, name) for name in CLIENTS))
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| fault | client | a new keyed request during the fault | the request in flight | "
        "its retry after recovery |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        flight = str(row.in_flight_status) if row.in_flight_status else "-"
        lines.append(
            f"| {FAULTS[row.fault]} | {row.client} | {row.answer} after {row.seconds:.2f} s | "
            f"{flight} | {row.retry} |"
        )
    return "\n".join(lines)


_MARKERS = re.compile(r"(<!-- fault-table:start -->\n).*?(<!-- fault-table:end -->)", re.DOTALL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.idemkit.fault_matrix")
    parser.add_argument("--write", type=Path, help="rewrite the table in this Markdown file")
    args = parser.parse_args(argv)
    rows = asyncio.run(matrix())
    text = table(rows)
    print(text)
    if args.write:
        doc = args.write.read_text()
        if not _MARKERS.search(doc):
            print(f"no fault-table markers in {args.write}", file=sys.stderr)
            return 1
        args.write.write_text(_MARKERS.sub(lambda m: m.group(1) + text + "\n" + m.group(2), doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
