"""Run a pattern's worker as its own process (SIGTERM/SIGINT stop it cleanly; SIGKILL is
safe too, that is the point)::

    python -m idemkit.patterns relay   --db postgresql://... --redis redis://...
    python -m idemkit.patterns consume --redis redis://... --topic orders --group model \\
                                       --handler myapp.read_model:apply_order
    python -m idemkit.patterns recover --redis redis://... --sagas myapp.sagas:ALL
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import threading
from collections.abc import Sequence
from typing import Any

import redis

from idemkit.errors import ConfigurationError
from idemkit.patterns._sql import connector
from idemkit.patterns.consumer import StreamConsumer
from idemkit.patterns.effects import LeasedEffect, RedisEffect
from idemkit.patterns.outbox import DEFAULT_TABLE, stream_name
from idemkit.patterns.relay import Relay


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    if not module or not attr:
        raise ConfigurationError(f"expected module:attribute, got {path!r}")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _relay(args: argparse.Namespace) -> None:
    relay = Relay(
        connector(args.db),
        redis.Redis.from_url(args.redis),
        table=args.table,
        batch_size=args.batch_size,
        lease_ms=args.lease_ms,
        maxlen=args.maxlen,
    )
    relay.run(_stop_event(), max_seconds=args.max_seconds)


def _consume(args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(args.redis)
    effect: Any = RedisEffect(client) if args.effect == "redis" else LeasedEffect(client)
    consumer: StreamConsumer[Any] = StreamConsumer(
        client,
        stream_name(args.topic),
        args.group,
        _load(args.handler),
        effect,
        max_deliveries=args.max_deliveries,
        claim_idle_ms=args.claim_idle_ms,
    )
    consumer.run(_stop_event(), max_seconds=args.max_seconds)


def _recover(args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis

    from idemkit.patterns.saga import SagaOrchestrator

    sagas = _load(args.sagas)

    async def main() -> None:
        client = aioredis.Redis.from_url(args.redis)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if args.max_seconds:
            loop.call_later(args.max_seconds, stop.set)
        orchestrator = SagaOrchestrator(client, sagas)
        await orchestrator.run_forever(stop, interval=args.interval)
        await client.aclose()

    asyncio.run(main())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m idemkit.patterns")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("relay", "consume", "recover"):
        p = sub.add_parser(name)
        p.add_argument("--redis", required=True, help="redis://host:port/db")
        p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    relay = sub.choices["relay"]
    relay.add_argument("--db", required=True, help="postgresql://... or sqlite:///path")
    relay.add_argument("--table", default=DEFAULT_TABLE)
    relay.add_argument("--batch-size", type=int, default=100)
    relay.add_argument("--lease-ms", type=int, default=10_000)
    relay.add_argument("--maxlen", type=int, default=None, help="approximate stream length cap")
    consume = sub.choices["consume"]
    consume.add_argument("--topic", required=True)
    consume.add_argument("--group", required=True)
    consume.add_argument("--handler", required=True, help="module:function(message, ctx)")
    consume.add_argument("--effect", choices=["redis", "leased"], default="redis")
    consume.add_argument("--max-deliveries", type=int, default=5)
    consume.add_argument("--claim-idle-ms", type=int, default=30_000)
    recover = sub.choices["recover"]
    recover.add_argument("--sagas", required=True, help="module:attribute, a list of Saga")
    recover.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    {"relay": _relay, "consume": _consume, "recover": _recover}[args.command](args)


if __name__ == "__main__":
    main()
