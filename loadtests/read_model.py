"""The shop's read model: the order events of the outbox stream, each applied once, in order.

A :class:`~idemkit.patterns.StreamConsumer` (group ``read-model``) reads the stream the relay
publishes the shop's outbox to, and applies each event through a
:class:`~idemkit.patterns.RedisEffect`: the model's writes, the event's dedup marker and the
counters commit in one ``MULTI``/``EXEC``, so a consumer killed after applying an event and
before acknowledging it does not apply it again when the event is redelivered (nor when a
relay that died before marking its batch publishes the event a second time).

What the model keeps:

* per order, the events applied so far (``history``) and the last one's number (``seq``);
* per event, how often it was applied (``1``, or the check fails);
* ``sales-<product>``: units sold, a :class:`crdt.GCounter` grown by each confirmed order;
* ``orders-in-progress``: a :class:`crdt.PNCounter`, +1 per reservation, -1 per confirmed or
  released order (0 once every saga has ended).

Per-order order: consumers of one group run in parallel, so a later event of an order can
reach one consumer before an earlier one is applied by another (or claimed back from a dead
one). An event is applied only right after its predecessor (``seq``); an early one is left
pending and retried after ``claim_idle_ms``.

``SHOP_BROKEN=consumer-no-dedup`` applies every delivery as it comes: no dedup marker, no
sequence check.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import redis
from redis.client import Pipeline

from crdt import GCounter
from idemkit.observe import Observer
from idemkit.patterns import Applied, Message, RedisEffect, StreamConsumer, stream_name
from loadtests.counters import Counters
from loadtests.shop_db import TOPIC

__all__ = [
    "APPLIED",
    "GROUP",
    "IN_PROGRESS",
    "MODEL",
    "OutOfOrder",
    "ReadModel",
    "group_backlog",
    "read_model_state",
    "sales_counter",
]

log = logging.getLogger("loadtests.read_model")

GROUP: Final = "read-model"
STREAM: Final = stream_name(TOPIC)
MODEL: Final = "shop:{model}:orders"  # hash order_id -> {"seq", "history", "product"}
APPLIED: Final = "shop:{model}:applied"  # hash event_id -> times applied
EARLY: Final = "shop:{model}:early"  # events that arrived before their predecessor (count)
MARKERS: Final = "shop:{model}:done:"  # RedisEffect dedup markers
IN_PROGRESS: Final = "orders-in-progress"
CLAIM_IDLE_MS: Final = 1_000
MAX_DELIVERIES: Final = 50  # early events are retried: be patient before dead-lettering


def sales_counter(product: str) -> str:
    return f"sales-{product}"


class OutOfOrder(Exception):
    """An event arrived before its predecessor was applied: left pending, retried later."""


class _EveryDelivery:
    """The broken effect: applies every delivery (no dedup marker)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def apply(self, dedup_id: str, call: Callable[[Pipeline], Any]) -> Applied:
        with self.client.pipeline(transaction=True) as pipe:
            pipe.multi()
            result = call(pipe)
            pipe.execute()
        return Applied("applied", result)


class ReadModel:
    """The handler and the consumer of the read model, on a blocking Redis client."""

    def __init__(self, client: redis.Redis, *, broken: str | None = None) -> None:
        self.client = client
        self.unguarded = broken == "consumer-no-dedup"
        self.counters = Counters(client)

    def apply(self, message: Message, pipe: Pipeline) -> None:
        event = message.payload
        order, seq, kind = str(event["order"]), int(event["seq"]), str(event["kind"])
        raw = self.client.hget(MODEL, order)
        state: dict[str, Any] = json.loads(raw) if raw else {"seq": 0, "history": []}
        if not self.unguarded:
            if seq <= state["seq"]:
                return  # applied before (the dedup marker normally says so first)
            if seq != state["seq"] + 1:
                self.client.incr(EARLY)  # for the report only: not part of the effect
                raise OutOfOrder(f"event {seq} of order {order} before event {state['seq'] + 1}")
        state = {"seq": seq, "history": [*state["history"], kind], "product": event["product"]}
        pipe.hset(MODEL, order, json.dumps(state, separators=(",", ":")))
        pipe.hincrby(APPLIED, message.event_id, 1)
        if kind == "reserved":
            self.counters.queue(pipe, IN_PROGRESS, 1)
        elif kind in ("confirmed", "released"):
            self.counters.queue(pipe, IN_PROGRESS, -1)
        if kind == "confirmed":
            self.counters.queue(pipe, sales_counter(event["product"]), event["qty"], GCounter)

    def consumer(self, name: str, *, observer: Observer | None = None) -> StreamConsumer[Any]:
        effect: Any = (
            _EveryDelivery(self.client)
            if self.unguarded
            else RedisEffect(self.client, prefix=MARKERS, ttl_s=24 * 3600)
        )
        return StreamConsumer(
            self.client,
            STREAM,
            GROUP,
            self.apply,
            effect,
            consumer=name,
            batch_size=20,
            block_ms=200,
            claim_idle_ms=CLAIM_IDLE_MS,
            max_deliveries=MAX_DELIVERIES,
            observer=observer,
        )


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_model_state(client: Any, counters: Counters) -> dict[str, Any]:
    """The model, the stream and the group, as plain data (``client`` is async)."""
    model = {_s(k): json.loads(v) for k, v in (await client.hgetall(MODEL)).items()}
    applied = {_s(k): int(v) for k, v in (await client.hgetall(APPLIED)).items()}
    products = sorted({state["product"] for state in model.values()})
    sales = await counters.values([sales_counter(p) for p in products], GCounter)
    (in_progress,) = (await counters.values([IN_PROGRESS])).values()
    published: Counter[str] = Counter()
    cursor = "-"
    while True:
        entries = await client.xrange(STREAM, min=cursor, count=1000)
        for _entry_id, fields in entries:
            published[_s(fields.get(b"event_id", fields.get("event_id", b"")))] += 1
        if len(entries) < 1000:
            break
        cursor = "(" + _s(entries[-1][0])
    return {
        "orders": model,
        "applied": applied,
        "sales": {p: sales[sales_counter(p)] for p in products},
        "in_progress": in_progress,
        "published": dict(published),
        "dead_letters": int(await client.xlen(f"{STREAM}:dead")),
        "early": int(await client.get(EARLY) or 0),
        "counters": counters.kind,
    }


async def group_backlog(client: Any) -> dict[str, int]:
    """Events of the stream the read model has not read yet (lag) or not acknowledged."""
    try:
        groups = await client.xinfo_groups(STREAM)
    except Exception:  # no stream yet: nothing published, nothing to apply
        return {"lag": 0, "pending": 0}
    for group in groups:
        if _s(group["name"]) == GROUP:
            lag = group.get("lag")
            if lag is None:  # unknown after deletions: count from what was read
                lag = int(await client.xlen(STREAM)) - int(group.get("entries-read") or 0)
            return {"lag": int(lag), "pending": int(group["pending"])}
    return {"lag": int(await client.xlen(STREAM)), "pending": 0}
