"""``make demo``: a retrying client against the shop, then a short Locust run, verified.

Runs on the embedded store (fakeredis, no server) unless ``REDIS_URL`` points at a Redis.
The shop's orders are sagas; its saga orchestrator, outbox relay and read-model consumer run
inside the demo's process, on a private SQLite file. Exit status 0 only when every payment
was charged exactly once, every saga ended completed or compensated, the read model agrees
with the orders, and the load run verified.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter
from typing import Any

import httpx

from idemkit.embedded import embedded_redis
from loadtests.service import create_app, read_ledger
from loadtests.verify import Acks, verify, verify_patterns

__all__ = ["main", "run_client_demo"]


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _outcome(response: httpx.Response) -> str:
    if response.headers.get("idempotent-replayed") == "true":
        return f"{response.status_code} replayed"
    return {
        409: "409 in flight (conflict)",
        422: "422 key reused with a different body",
        503: "503 store unavailable",
    }.get(response.status_code, f"{response.status_code} executed")


async def run_client_demo(client: Any, out: list[str]) -> bool:
    """The three retry stories against the shop on ``client``; True when all held.

    Names carry a run tag, so repeated runs against one real Redis do not mix.
    """
    run = uuid.uuid4().hex[:6]
    hot, sku = f"hot-{run}", f"sku-{run}"
    app = create_app(client, stock={hot: 3, sku: 100}, lease=2.0)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    ok = True

    def say(line: str = "") -> None:
        out.append(line)
        print(line, flush=True)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://shop.demo") as http,
    ):
        say("1) a payment times out on the client, which retries with the same key")
        key = _key()
        pay1 = {"payment_id": f"pay-1-{run}", "amount": 4200}
        slow = {**key, "x-simulate-latency-ms": "400"}
        first = asyncio.ensure_future(http.post("/payments", json=pay1, headers=slow))
        try:
            await asyncio.wait_for(asyncio.shield(first), timeout=0.1)
            say("   attempt 1: answered before the timeout (unexpected)")
        except TimeoutError:
            say("   attempt 1: client timeout after 0.1 s (the server keeps working)")
        retry = await http.post("/payments", json=pay1, headers=key)
        say(
            f"   attempt 2 (immediately): {_outcome(retry)}, "
            f"Retry-After {retry.headers.get('retry-after')}"
        )
        ok &= retry.status_code == 409
        await first  # the first attempt finishes server-side and stores its response
        retry = await http.post("/payments", json=pay1, headers=key)
        say(f"   attempt 3 (after Retry-After): {_outcome(retry)} {retry.json()}")
        ok &= retry.status_code == 201 and retry.headers.get("idempotent-replayed") == "true"

        say("2) ten concurrent duplicates of one payment (same key, same body)")
        key = _key()
        pay2 = {"payment_id": f"pay-2-{run}", "amount": 990}
        dup_headers = {**key, "x-simulate-latency-ms": "100"}
        replies = await asyncio.gather(
            *(http.post("/payments", json=pay2, headers=dup_headers) for _ in range(10))
        )
        tally = Counter(_outcome(r) for r in replies)
        say(f"   outcomes: {dict(sorted(tally.items()))}")
        ok &= tally["201 executed"] == 1
        again = await http.post("/payments", json=pay2, headers=key)
        say(f"   a later retry: {_outcome(again)}")
        ok &= again.headers.get("idempotent-replayed") == "true"

        say("3) the same key reused for a different payment body")
        reused = await http.post(
            "/payments", json={"payment_id": f"pay-2-{run}", "amount": 99000}, headers=key
        )
        say(f"   outcome: {_outcome(reused)}: {reused.json().get('title')}")
        ok &= reused.status_code == 422

        say(f"4) eight buyers race for the last 3 units of {hot} (fenced inventory lock)")
        orders = [{"order_id": f"order-{run}-{i}", "product": hot, "qty": 1} for i in range(1, 9)]
        replies = await asyncio.gather(
            *(http.post("/orders", json=o, headers=_key()) for o in orders)
        )
        created = [r.json()["order_id"] for r in replies if r.status_code == 201]
        tally = Counter(r.json().get("status", r.status_code) for r in replies)
        say(f"   outcomes: {dict(tally)}; created {sorted(created)}")
        ok &= len(created) == 3
        accepted = {str(o["order_id"]) for o in orders}

        say("5) an order no carrier ships to: a saga that charged, then refunds and releases")
        far = {"order_id": f"order-{run}-far", "product": sku, "qty": 2, "ship_to": "atlantis"}
        reply = await http.post("/orders", json=far, headers=_key())
        say(f"   outcome: {reply.status_code} {reply.json()['status']}")
        ok &= reply.json()["status"] == "cancelled"
        accepted.add(str(far["order_id"]))
        doc = await _settled(http)
        events = [e["kind"] for e in doc["orders"][far["order_id"]]["events"]]
        say(f"   its events, committed with the order and relayed from the outbox: {events}")

        say("6) the read model, fed by the stream (each event applied once, in order)")
        model = doc["model"]
        counter = "a CRDT" if model["counters"] == "crdt" else "a plain (embedded store)"
        say(
            f"   units sold of {hot}: {model['sales'].get(hot, 0)} ({counter} counter); "
            f"orders in progress: {model['in_progress']}"
        )
        acks = Acks(orders=set(created), accepted=accepted)
        patterns = verify_patterns(_only_orders(doc, run), acks)
        for line in patterns.lines()[1:]:
            if line.strip().startswith(("sagas", "outbox", "read model", "VIOLATION", "-")):
                say("   " + line.strip())
        ok &= patterns.ok

        ledger = _only(await read_ledger(client), run)
    say("ledger: times each payment was actually charged")
    for payment, n in sorted(ledger["charges"].items()):
        say(f"   {payment}: charged {n}x {'(once)' if n == 1 else '(WRONG)'}")
        ok &= n == 1
    inv = ledger["inventory"][hot]
    say(
        f"   {hot}: {inv['initial']} in stock, "
        f"{sum(inv['reservations'].values())} sold, {inv['stock']} left"
    )
    acks = Acks(payments={f"pay-1-{run}", f"pay-2-{run}"}, orders=set(created))
    result = verify(ledger, acks)
    for line in result.lines():
        say(line)
    ok &= result.ok
    return bool(ok)


async def _settled(http: httpx.AsyncClient) -> dict[str, Any]:
    """The shop's audit once its sagas, relay and consumer have caught up (at most 10 s)."""
    for _ in range(200):
        if (await http.get("/_patterns?summary=1")).json()["settled"]:
            break
        await asyncio.sleep(0.05)
    doc: dict[str, Any] = (await http.get("/_patterns")).json()
    return doc


def _only_orders(doc: dict[str, Any], run: str) -> dict[str, Any]:
    """This run's part of an audit whose stores may hold earlier runs' orders too."""
    model = doc["model"]
    return {
        **doc,
        "orders": {k: v for k, v in doc["orders"].items() if run in k},
        "model": {
            **model,
            **{
                part: {k: v for k, v in model[part].items() if run in k}
                for part in ("orders", "applied", "published", "sales")
            },
        },
    }


def _only(ledger: dict[str, Any], run: str) -> dict[str, Any]:
    """This run's part of a ledger that may hold earlier runs' entries too."""
    return {
        section: {k: v for k, v in entries.items() if run in k}
        for section, entries in ledger.items()
    }


def _client() -> tuple[Any, str]:
    url = os.environ.get("REDIS_URL")
    if url:
        import redis.asyncio as aioredis

        client: Any = aioredis.Redis.from_url(url)
        return client, f"Redis at {url}"
    return embedded_redis(), "the embedded store (fakeredis, no server)"


def main(argv: list[str] | None = None) -> int:
    load_seconds = float(os.environ.get("DEMO_LOAD_SECONDS", "10"))
    client, where = _client()
    print(f"idemkit demo: shop service on {where}\n", flush=True)
    lines: list[str] = []
    ok = asyncio.run(run_client_demo(client, lines))
    if load_seconds > 0:
        ok &= _load_run(load_seconds)
    print(f"\ndemo {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


def _load_run(seconds: float) -> bool:
    try:
        from loadtests.driver import RunOptions, run
    except ImportError:  # pragma: no cover - the driver is part of this package
        return True
    print(
        f"\n5) Locust: {seconds:.0f} s of mixed traffic on the embedded store, then verify",
        flush=True,
    )
    opts = RunOptions(duration=seconds, embedded=True, workers=1, users=10)
    outcome = run(opts, echo=lambda line: print("   " + line, flush=True))
    return outcome.ok


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
