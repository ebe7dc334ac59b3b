"""Processes the fault tests start, SIGSTOP and SIGKILL: ``python -m tests.patterns._procs``.

Each prints one line per interesting event to stdout (flushed), so the test can follow it.
``--pause-at EVENT`` / ``--kill-at EVENT`` make the process stop (SIGSTOP) or die (SIGKILL)
itself right after the first observer event named EVENT: a fault at an exact point.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import redis

from idemkit.observe import Event
from idemkit.patterns import (
    EffectContext,
    LeasedEffect,
    Message,
    RedisEffect,
    Relay,
    SqlEffect,
    StreamConsumer,
    stream_name,
)


def _say(*words: object) -> None:
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def _observer(args: argparse.Namespace) -> Callable[[Event], None]:
    fired: set[str] = set()

    def observe(event: Event) -> None:
        label = f"{event.name}:{event.outcome}"
        _say("event", label, *(f"{k}={v}" for k, v in sorted(event.attrs.items())))
        for point, sig in ((args.pause_at, signal.SIGSTOP), (args.kill_at, signal.SIGKILL)):
            if point and point not in fired and (label == point or event.name == point):
                if args.skip and args.skip > 0:
                    args.skip -= 1
                    continue
                fired.add(point)
                _say("fault", point)
                os.kill(os.getpid(), sig)

    return observe


def _stop_on_term() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def relay(args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(args.redis)
    worker = Relay(
        lambda: psycopg.connect(args.dsn),
        client,
        lease_ms=args.lease_ms,
        batch_size=args.batch_size,
        poll_interval=0.05,
        observer=_observer(args),
    )
    _say("ready")
    worker.run(_stop_on_term(), max_seconds=60)


def consumer(args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(args.redis)
    effect: Any
    handler: Callable[[Message, Any], Any]
    if args.effect == "redis":
        effect = RedisEffect(client)

        def handler(message: Message, pipe: Any) -> None:
            pipe.hincrby("effects", message.event_id, 1)

    elif args.effect == "sql":
        effect = SqlEffect(lambda: psycopg.connect(args.dsn))

        def handler(message: Message, conn: Any) -> None:
            conn.execute(
                "INSERT INTO effects VALUES (%s, 1) "
                "ON CONFLICT (event_id) DO UPDATE SET n = effects.n + 1",
                [message.event_id],
            )

    else:
        effect = LeasedEffect(client, lease_ms=2_000)

        def handler(message: Message, ctx: EffectContext) -> None:
            client.hincrby("effects", message.event_id, 1)

    worker = StreamConsumer(
        client,
        stream_name("orders"),
        "model",
        handler,
        effect,
        claim_idle_ms=args.claim_idle_ms,
        block_ms=50,
        observer=_observer(args),
    )
    _say("ready")
    worker.run(_stop_on_term(), max_seconds=60)


def saga(args: argparse.Namespace) -> None:
    import asyncio

    import redis.asyncio as aioredis

    from idemkit.patterns import SagaOrchestrator
    from tests.patterns._saga_shop import order_saga

    async def go() -> None:
        client = aioredis.Redis.from_url(args.redis)
        orchestrator = SagaOrchestrator(
            client, [order_saga(args.service)], lease_ms=args.lease_ms, observer=_observer(args)
        )
        _say("ready")
        if args.role == "saga" and args.count:
            # Orders o-0 .. o-(count-1), every third one fails to confirm; a run after a kill
            # returns finished ones, and resumes the interrupted one once its lease lapsed.
            for i in range(args.count):
                data = {"order": f"o-{i}", "fail_confirm": i % 3 == 2}
                outcome = await orchestrator.run("shop-order", f"o-{i}", data, wait=5)
                _say("outcome", outcome.saga_id, outcome.status)
            _say("all done")
        elif args.role == "saga":
            data = {"order": args.saga_id, "fail_confirm": args.fail_confirm}
            outcome = await orchestrator.run("shop-order", args.saga_id, data)
            _say("outcome", outcome.saga_id, outcome.status)
        else:
            for _ in range(400):
                for outcome in await orchestrator.recover():
                    _say("outcome", outcome.saga_id, outcome.status)
                if not await client.zcard("idemkit:saga:index:unfinished"):
                    break
                await asyncio.sleep(0.05)
        await client.aclose()

    asyncio.run(go())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.patterns._procs")
    parser.add_argument("role", choices=["relay", "consumer", "saga", "recover"])
    parser.add_argument("--redis", required=True)
    parser.add_argument("--dsn")
    parser.add_argument("--lease-ms", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--effect", choices=["redis", "sql", "leased"], default="redis")
    parser.add_argument("--claim-idle-ms", type=int, default=300)
    parser.add_argument("--service")
    parser.add_argument("--saga-id")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--fail-confirm", action="store_true")
    parser.add_argument("--pause-at")
    parser.add_argument("--kill-at")
    parser.add_argument("--skip", type=int, default=0, help="let this many matches pass first")
    args = parser.parse_args(argv)
    {"relay": relay, "consumer": consumer, "saga": saga, "recover": saga}[args.role](args)


if __name__ == "__main__":
    main()
