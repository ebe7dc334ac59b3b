"""The shop's pattern workers, each a process of its own that the fault driver can kill or pause::

    python -m loadtests.workers orchestrate --redis URL --db URL [--name orchestrator-1]
    python -m loadtests.workers relay       --redis URL --db URL [--name relay-1]
    python -m loadtests.workers consume     --redis URL [--name consumer-1]
    python -m loadtests.workers setup       --db URL

* **orchestrate**: drives the ``place-order`` sagas the shop's HTTP workers start
  (:meth:`~idemkit.patterns.SagaOrchestrator.start`): the recovery loop of
  :class:`~idemkit.patterns.SagaOrchestrator` (unfinished sagas whose lease is free: new ones,
  and those of an orchestrator that died), many sagas at a time. Run two: they share the work,
  and each takes over the other's sagas once their lease lapses.
* **relay**: :class:`~idemkit.patterns.Relay` of the shop's outbox. Run two: one publishes,
  the other waits for its lease (the active one's name is kept in :data:`RELAY_ACTIVE`).
* **consume**: the read model's :class:`~idemkit.patterns.StreamConsumer`
  (:mod:`loadtests.read_model`). Run two: they share the group's messages and claim back a
  dead one's.

Fault points, so a fault lands where it hurts most: ``SIGUSR1`` makes the process SIGKILL
itself, ``SIGUSR2`` SIGSTOP itself, at its next fault point (it prints ``fault ...`` first):

* orchestrator: a charge just executed, the saga log does not know yet;
* relay: a batch is in the stream, not yet marked published in the outbox;
* consumer: an event's effect committed, its ``XACK`` not sent.

:class:`InProcessWorkers` runs one of each inside the shop's own process instead (the
embedded demo, and the shop under tests that start no processes): the orchestrator loop as a
task, the relay and the consumer as threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis
import redis.asyncio as aioredis

from idemkit.errors import LeaseLostError
from idemkit.observe import Event
from idemkit.patterns import Relay, SagaBusyError, SagaOrchestrator
from loadtests.read_model import ReadModel
from loadtests.shop_db import ShopDb
from loadtests.shop_saga import OrderSaga

__all__ = [
    "RELAY_ACTIVE",
    "FaultPoint",
    "InProcessWorkers",
    "drive_sagas",
    "main",
    "orchestrator_for",
    "sync_twin",
]

log = logging.getLogger("loadtests.workers")

RELAY_ACTIVE: Final = "shop:workers:relay-active"  # name of the relay holding the lease


def _say(*words: object) -> None:
    now = time.time()
    stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
    sys.stdout.write(" ".join([stamp, *(str(w) for w in words)]) + "\n")
    sys.stdout.flush()


# -- fault points -----------------------------------------------------------------------------


def _charge_ran(event: Event) -> bool:
    ran = event.name == "saga.action" and event.outcome == "ok"
    return ran and event.attrs.get("step") == "charge"


def _published(event: Event) -> bool:
    return event.name == "outbox.publish"


def _applied(event: Event) -> bool:
    return event.name == "consumer.apply" and event.outcome == "applied"


class FaultPoint:
    """An observer that SIGKILLs (after ``SIGUSR1``) or SIGSTOPs (after ``SIGUSR2``) its own
    process at the next event ``at`` matches; ``also`` sees every event first."""

    def __init__(
        self, at: Callable[[Event], bool], also: Callable[[Event], None] | None = None
    ) -> None:
        self.at = at
        self.also = also
        self.armed: signal.Signals | None = None

    def install(self) -> FaultPoint:
        signal.signal(signal.SIGUSR1, lambda *_: self._arm(signal.SIGKILL))
        signal.signal(signal.SIGUSR2, lambda *_: self._arm(signal.SIGSTOP))
        return self

    def _arm(self, sig: signal.Signals) -> None:
        self.armed = sig
        _say("armed", sig.name)

    def __call__(self, event: Event) -> None:
        if self.also is not None:
            self.also(event)
        sig = self.armed
        if sig is not None and self.at(event):
            self.armed = None
            _say("fault", f"{event.name}:{event.outcome}", sig.name)
            os.kill(os.getpid(), sig)


# -- the saga orchestrator loop -----------------------------------------------------------------


def orchestrator_for(
    order_saga: OrderSaga, *, lease_ms: int, observer: Callable[[Event], None] | None = None
) -> SagaOrchestrator:
    """The shop's orchestrator: patient with transient errors (a Redis restart takes a
    second or two), so an order is compensated only when its outcome stays unknown."""
    return SagaOrchestrator(
        order_saga.client,
        [order_saga.saga],
        lease_ms=lease_ms,
        action_attempts=4,
        compensation_attempts=8,
        retry_backoff=0.1,
        observer=observer,
    )


async def drive_sagas(
    orchestrator: SagaOrchestrator,
    stop: asyncio.Event,
    *,
    interval: float = 0.02,
    concurrency: int = 32,
) -> None:
    """Drive unfinished sagas, up to ``concurrency`` at once, until ``stop`` is set.

    :meth:`SagaOrchestrator.recover`, concurrently: every ``interval`` the unfinished index
    is read and each saga not already driven here is resumed in a task of its own. A saga
    whose lease another orchestrator holds is tried again shortly (its lease lapses if that
    orchestrator died, and then it is resumed from the log).
    """
    running: dict[str, asyncio.Task[None]] = {}
    not_before: dict[str, float] = {}

    async def one(saga_id: str) -> None:
        try:
            await orchestrator.resume(saga_id)
        except SagaBusyError:
            not_before[saga_id] = time.monotonic() + 0.05
        except LeaseLostError as exc:
            # Paused past the lease: another orchestrator drives this saga now, and the log
            # refused what this one wanted to write.
            log.warning(
                "saga %s: lease lost, left to the orchestrator that took it: %s", saga_id, exc
            )
            not_before[saga_id] = time.monotonic() + 0.05
        except Exception as exc:
            log.warning("saga %s: %r; retrying", saga_id, exc)
            not_before[saga_id] = time.monotonic() + 0.25
        finally:
            running.pop(saga_id, None)

    while not stop.is_set():
        pause = interval
        try:
            unfinished = await orchestrator.log.unfinished(500)
        except Exception as exc:
            log.warning("cannot list unfinished sagas: %r", exc)
            unfinished, pause = [], 0.25
        now = time.monotonic()
        for saga_id in unfinished:
            if len(running) >= concurrency:
                break
            if saga_id not in running and not_before.get(saga_id, 0.0) <= now:
                running[saga_id] = asyncio.create_task(one(saga_id))
        if len(not_before) > 10_000:
            keep = set(unfinished)
            for saga_id in [s for s in not_before if s not in keep]:
                del not_before[saga_id]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
    if running:
        # Let sagas in flight finish their step; cancelled ones release their lease and are
        # resumed from the log by another orchestrator.
        await asyncio.wait(list(running.values()), timeout=2.0)
        for task in list(running.values()):
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)


# -- processes --------------------------------------------------------------------------------


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _orchestrate(args: argparse.Namespace) -> None:
    async def run() -> None:
        client = aioredis.Redis.from_url(args.redis, socket_timeout=5, socket_connect_timeout=2)
        db = ShopDb(args.db)
        order_saga = OrderSaga(client, db, broken=args.broken)
        point = FaultPoint(_charge_ran).install()
        orchestrator = orchestrator_for(order_saga, lease_ms=args.lease_ms, observer=point)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        _say("ready", args.name, os.getpid())
        try:
            await drive_sagas(orchestrator, stop)
        finally:
            db.close()
            await client.aclose()

    asyncio.run(run())


def _relay(args: argparse.Namespace) -> None:
    db = ShopDb(args.db)
    client = redis.Redis.from_url(args.redis, socket_timeout=5, socket_connect_timeout=2)

    def note(event: Event) -> None:
        if event.name == "outbox.lease":
            _say("lease", event.outcome, *(f"{k}={v}" for k, v in event.attrs.items()))
            if event.outcome == "acquired":
                with contextlib.suppress(redis.RedisError):
                    client.set(RELAY_ACTIVE, args.name)

    relay = Relay(
        db.connect,
        client,
        lease_ms=args.lease_ms,
        poll_interval=0.05,
        batch_size=200,
        observer=FaultPoint(_published, note).install(),
    )
    _say("ready", args.name, os.getpid())
    relay.run(_stop_event())


def _consume(args: argparse.Namespace) -> None:
    client = redis.Redis.from_url(args.redis, socket_timeout=5, socket_connect_timeout=2)
    model = ReadModel(client, broken=args.broken)
    consumer = model.consumer(args.name, observer=FaultPoint(_applied).install())
    _say("ready", args.name, os.getpid())
    consumer.run(_stop_event())


def _setup(args: argparse.Namespace) -> None:
    ShopDb(args.db).setup()
    _say("ready")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.workers")
    parser.add_argument("role", choices=["orchestrate", "relay", "consume", "setup"])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--db", default=None, help="postgresql://... or sqlite:///path")
    parser.add_argument("--name", default=None, help="defaults to <role>-<pid>")
    parser.add_argument("--lease-ms", type=int, default=2_000)
    parser.add_argument("--broken", default=os.environ.get("SHOP_BROKEN") or None)
    args = parser.parse_args(argv)
    if args.role != "consume" and not args.db:
        parser.error(f"{args.role} needs --db")
    args.name = args.name or f"{args.role}-{os.getpid()}"
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    {"orchestrate": _orchestrate, "relay": _relay, "consume": _consume, "setup": _setup}[args.role](
        args
    )


# -- in the shop's own process ----------------------------------------------------------------


def sync_twin(client: Any) -> redis.Redis:
    """A blocking client on the same server (or embedded store) as async ``client``."""
    kwargs = client.connection_pool.connection_kwargs
    if type(client).__module__.startswith("fakeredis"):
        import fakeredis

        # fakeredis shares one in-process server between clients of the same host and port.
        twin: redis.Redis = fakeredis.FakeRedis(
            host=kwargs["host"], port=kwargs["port"], version=kwargs.get("version", (7,))
        )
        return twin
    return redis.Redis(
        host=kwargs.get("host", "127.0.0.1"),
        port=kwargs.get("port", 6379),
        db=kwargs.get("db", 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        socket_timeout=5,
        socket_connect_timeout=2,
    )


class InProcessWorkers:
    """One orchestrator loop, one relay and one consumer inside the shop's process."""

    def __init__(
        self,
        orchestrator: SagaOrchestrator,
        db: ShopDb,
        client: Any,
        *,
        lease_ms: int,
        broken: str | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.db = db
        self.sync = sync_twin(client)
        self.lease_ms = lease_ms
        self.broken = broken
        self._stop = asyncio.Event()
        self._halt = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._threads: list[threading.Thread] = []

    async def start(self) -> None:
        self._task = asyncio.create_task(drive_sagas(self.orchestrator, self._stop))
        relay = Relay(self.db.connect, self.sync, lease_ms=self.lease_ms, poll_interval=0.05)
        consumer = ReadModel(self.sync, broken=self.broken).consumer(f"in-process-{os.getpid()}")
        for name, target in (("shop-relay", relay.run), ("shop-consumer", consumer.run)):
            thread = threading.Thread(target=target, args=(self._halt,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def stop(self) -> None:
        self._stop.set()
        self._halt.set()
        if self._task is not None:
            await self._task
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 5.0)
        self.sync.close()


if __name__ == "__main__":
    main()
