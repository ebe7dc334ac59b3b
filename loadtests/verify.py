"""The shop's server-side checks: its ledger, and its transaction patterns, against what
clients were told.

Both are server-side check hooks of the Locust kit (``IdempotentUser.server_checks``): at the
end of a run they turn the kit's acknowledgements (a 2xx for a payment, an order the shop
accepted or created, an applied increment) into :class:`Acks` and compare them with what the
shop's stores say.

* :func:`ledger_check` reads the ledger (``GET /_ledger``, every side effect counted): no
  payment charged twice, no acknowledged order or increment missing, no order or increment
  applied twice, no product sold beyond its stock, and every counter equal to the increments
  applied to it.
* :func:`patterns_check` waits until the sagas, the relay and the consumer have settled, then
  reads ``GET /_patterns`` (the saga log, payments, reservations, the SQL orders with their
  events and outbox rows, the stream and the read model) and checks the transaction
  patterns: every saga ended completed or fully compensated; no charge stands without its
  order (or its refund); every outbox event was published and applied exactly once in
  effect (the read model and its CRDT counters equal what the committed orders imply); the
  events of each order were applied in order.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from integrations.locust import Ack, CheckContext, Verification

__all__ = [
    "Acks",
    "Verification",
    "acks_from",
    "fetch_ledger",
    "fetch_patterns",
    "ledger_check",
    "patterns_check",
    "verify",
    "verify_patterns",
]

SETTLE_TIMEOUT = 45.0  # s the patterns may take to finish what the run started


@dataclass
class Acks:
    """Acknowledgements clients received."""

    payments: set[str] = field(default_factory=set)
    orders: set[str] = field(default_factory=set)  # created (201)
    increments: set[str] = field(default_factory=set)  # "<counter>/<id>"
    accepted: set[str] = field(default_factory=set)  # orders answered 2xx (created or not)


def acks_from(acks: Iterable[Ack]) -> Acks:
    """The shop's view of the kit's acknowledgements (by path, whatever the route names)."""
    out = Acks()
    for ack in acks:
        body = ack.request if isinstance(ack.request, dict) else {}
        answer = ack.response if isinstance(ack.response, dict) else {}
        parts = ack.path.strip("/").split("/")
        if parts == ["payments"] and "payment_id" in body:
            out.payments.add(str(body["payment_id"]))
        elif parts == ["orders"]:
            out.accepted.add(str(body.get("order_id")))
            if ack.status == 201 and answer.get("status") == "created":
                out.orders.add(str(body.get("order_id")))
        elif len(parts) == 3 and parts[0] == "counters" and parts[2] == "increment":
            out.increments.add(f"{parts[1]}/{body.get('id')}")
    return out


def _fetch(host: str, path: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(f"{host.rstrip('/')}{path}", timeout=timeout) as answer:
        doc: dict[str, Any] = json.load(answer)
    return doc


def fetch_ledger(host: str, timeout: float = 10.0) -> dict[str, Any]:
    return _fetch(host, "/_ledger", timeout)


def fetch_patterns(host: str, *, settle: float = SETTLE_TIMEOUT) -> dict[str, Any]:
    """``GET /_patterns`` once nothing is in motion any more (or ``settle`` s have passed:
    then ``doc["settle"]["settled"]`` is false)."""
    deadline = time.monotonic() + settle
    while True:
        summary = _fetch(host, "/_patterns?summary=1", 10.0)
        if summary.get("settled") or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return _fetch(host, "/_patterns", 60.0)


def patterns_check(context: CheckContext, result: Verification) -> None:
    """Server-side check hook: the transaction patterns, once settled (``GET /_patterns``)."""
    started = time.monotonic()
    doc = fetch_patterns(context.host)
    verify_patterns(doc, acks_from(context.acks), result)
    context.info["transaction patterns"] = {
        "settled after (s)": round(time.monotonic() - started, 1),
        **{k: v for k, v in doc["settle"].items() if k != "settled"},
        "counters": doc["model"].get("counters"),
    }


def ledger_check(context: CheckContext, result: Verification) -> None:
    """Server-side check hook: ``GET /_ledger`` verified against the acknowledgements."""
    time.sleep(0.6)  # the shop flushes its middleware event counts every 0.5 s
    ledger = fetch_ledger(context.host)
    verify(ledger, acks_from(context.acks), result)
    context.info["middleware events (all workers)"] = ledger.get("events", {})


def verify(
    ledger: Mapping[str, Any], acks: Acks, result: Verification | None = None
) -> Verification:
    result = Verification() if result is None else result
    _payments(ledger, acks, result)
    _orders(ledger, acks, result)
    _inventory(ledger, result)
    _counters(ledger, acks, result)
    return result


def _payments(ledger: Mapping[str, Any], acks: Acks, result: Verification) -> None:
    charges: Mapping[str, int] = ledger["charges"]
    for payment, n in charges.items():
        if n > 1:
            result.fail("double-charge", f"payment {payment} charged {n} times")
    for payment in acks.payments:
        if charges.get(payment, 0) == 0:
            result.fail("lost-payment", f"payment {payment} acknowledged but never charged")
    result.checks["payments"] = (
        f"{len(charges)} charged, {len(acks.payments)} acknowledged, "
        f"max charges per payment {max(charges.values(), default=0)}"
    )


def _orders(ledger: Mapping[str, Any], acks: Acks, result: Verification) -> None:
    orders: Mapping[str, str] = ledger["orders"]
    runs: Mapping[str, int] = ledger["order_runs"]
    for order in acks.orders:
        if order not in orders:
            result.fail("lost-order", f"order {order} acknowledged but not in the ledger")
    # A handler that failed before its effect (Redis down: 503) releases the key and runs
    # again on the retry; that is by design. Its effects (reservation, order record) are
    # keyed by order id and checked in _inventory, so only the count is reported here.
    rerun = sum(1 for n in runs.values() if n > 1)
    result.checks["orders"] = (
        f"{len(orders)} exist, {len(acks.orders)} acknowledged, "
        f"{rerun} handler re-runs after a released key"
    )


def _inventory(ledger: Mapping[str, Any], result: Verification) -> None:
    orders: Mapping[str, str] = ledger["orders"]
    sold_total = 0
    orphans = 0
    for product, inv in ledger["inventory"].items():
        reserved = sum(inv["reservations"].values())
        sold_total += reserved
        if inv["stock"] < 0 or reserved > inv["initial"]:
            result.fail(
                "oversell",
                f"{product}: {reserved} units reserved of {inv['initial']} "
                f"(stock now {inv['stock']})",
            )
        elif inv["initial"] - inv["stock"] != reserved:
            result.fail(
                "inventory-mismatch",
                f"{product}: stock fell by {inv['initial'] - inv['stock']} "
                f"but {reserved} units are reserved",
            )
        for order in inv["reservations"]:
            if order not in orders:
                # Reserved, then Redis or the worker died before the order was recorded: the
                # client was told "outcome unknown" (500, stored), never "created" (an
                # acknowledged order missing is lost-order). Stock held by an order nobody
                # owns is a leak of the two-step handler, not a double effect: counted.
                orphans += 1
    result.checks["inventory"] = (
        f"{len(ledger['inventory'])} products, {sold_total} units sold, {orphans} reservations "
        "left without an order by a handler that died between its two steps"
    )


def _counters(ledger: Mapping[str, Any], acks: Acks, result: Verification) -> None:
    increments: Mapping[str, int] = ledger["increments"]
    applied: Counter[str] = Counter()
    for inc, n in increments.items():
        applied[inc.split("/", 1)[0]] += n
        if n > 1:
            result.fail("increment-applied-twice", f"increment {inc} applied {n} times")
    for inc in acks.increments:
        if increments.get(inc, 0) == 0:
            result.fail("lost-increment", f"increment {inc} acknowledged but not applied")
    counters: Mapping[str, int] = ledger["counters"]
    for name, value in counters.items():
        if value != applied[name]:
            result.fail("counter-mismatch", f"counter {name} = {value}, increments {applied[name]}")
    result.checks["counters"] = (
        f"{len(counters)} counters, {sum(counters.values())} total, "
        f"{len(acks.increments)} increments acknowledged"
    )


# -- the transaction patterns ------------------------------------------------------------------

_FINAL = ("completed", "compensated")
_UNDONE_BY = {"reserved": "released", "charged": "refunded"}


def verify_patterns(
    doc: Mapping[str, Any], acks: Acks, result: Verification | None = None
) -> Verification:
    """Check ``GET /_patterns`` (:meth:`loadtests.service.Shop.audit`) against ``acks``."""
    result = Verification() if result is None else result
    settle = doc["settle"]
    if not settle.get("settled"):
        still = ", ".join(f"{k} {v}" for k, v in settle.items() if k != "settled" and v)
        result.fail("not-settled", f"still in motion after {SETTLE_TIMEOUT:g} s: {still}")
    _sagas(doc["orders"], acks, result)
    _order_payments(doc["orders"], result)
    _outbox(doc["orders"], doc["model"], settle, result)
    _read_model(doc["orders"], doc["model"], result)
    return result


def _sagas(orders: Mapping[str, Any], acks: Acks, result: Verification) -> None:
    outcomes: Counter[str] = Counter()
    for order_id, order in orders.items():
        saga = order["saga"]
        if saga is None:
            if order_id in acks.accepted:
                result.fail("saga-missing", f"order {order_id} was accepted but has no saga")
            outcomes["never started"] += 1
            continue
        status = saga["status"]
        outcomes[status] += 1
        if status not in _FINAL:
            kind = "saga-parked" if status == "parked" else "saga-unfinished"
            result.fail(kind, f"order {order_id}: saga {status} ({saga.get('error')})")
            continue
        if order_id in acks.orders and status != "completed":
            result.fail("created-not-completed", f"order {order_id} created, saga {status}")
        sql = order["sql"] or {}
        if status == "completed":
            problems = []
            if order["reserved"] != order["qty"]:
                problems.append(f"{order['reserved']} of {order['qty']} units reserved")
            if order["charges"] - order["refunds"] != 1:
                problems.append(f"charged {order['charges']}, refunded {order['refunds']}")
            if sql.get("status") != "confirmed":
                problems.append(f"database status {sql.get('status')}")
            if problems:
                result.fail("completed-saga-incomplete", f"order {order_id}: {'; '.join(problems)}")
        else:
            if order["reserved"]:
                result.fail(
                    "compensation-incomplete",
                    f"order {order_id} compensated but still holds {order['reserved']} units",
                )
            if sql.get("status") == "confirmed":
                result.fail("compensation-incomplete", f"order {order_id} confirmed, compensated")
    failed = Counter(
        f"{o['saga']['failed_step']}: {o['saga']['error']}"
        for o in orders.values()
        if o["saga"] and o["saga"]["status"] == "compensated"
    )
    reasons = ", ".join(f"{n} {why}" for why, n in failed.most_common(4))
    result.checks["sagas"] = (
        f"{len(orders)} orders: {outcomes['completed']} completed, {outcomes['compensated']} "
        f"compensated ({reasons or 'none'}), {outcomes['never started']} never started; "
        f"{len(acks.accepted)} accepted by clients, {len(acks.orders)} created"
    )


def _order_payments(orders: Mapping[str, Any], result: Verification) -> None:
    charged = refunded = 0
    for order_id, order in orders.items():
        charges, refunds = order["charges"], order["refunds"]
        charged += charges > 0
        refunded += refunds > 0
        if charges > 1:
            result.fail("double-charge", f"order {order_id} charged {charges} times")
        if refunds > 1:
            result.fail("double-refund", f"order {order_id} refunded {refunds} times")
        saga = order["saga"] or {}
        if charges > refunds and saga.get("status") != "completed":
            result.fail(
                "charge-without-order",
                f"order {order_id}: a charge stands, saga {saga.get('status')}, no refund",
            )
    result.checks["order payments"] = (
        f"{charged} orders charged, {refunded} refunded; "
        f"max charges per order {max((o['charges'] for o in orders.values()), default=0)}"
    )


def _outbox(
    orders: Mapping[str, Any],
    model: Mapping[str, Any],
    settle: Mapping[str, Any],
    result: Verification,
) -> None:
    published: Mapping[str, int] = model["published"]
    applied: Mapping[str, int] = model["applied"]
    events = [e for order in orders.values() for e in order["events"]]
    known = {e["event_id"] for e in events}
    if settle.get("unpublished_events"):
        result.fail("outbox-unpublished", f"{settle['unpublished_events']} events never published")
    for order_id, order in orders.items():
        ids = [e["outbox_id"] for e in order["events"]]
        if None in ids or ids != sorted(ids):
            result.fail("outbox-order", f"order {order_id}: outbox rows {ids} not in event order")
    for event in events:
        name = event["event_id"]
        if not event["published"] or not published.get(name):
            result.fail("event-not-published", f"event {name} is not in the stream")
        times = applied.get(name, 0)
        if times == 0:
            result.fail("event-not-applied", f"event {name} was never applied to the read model")
        elif times > 1:
            result.fail("event-applied-twice", f"event {name} applied {times} times")
    for name in set(applied) - known:
        result.fail("phantom-event", f"the read model applied {name}, which no order recorded")
    copies = sum(published.values()) - len(published)
    result.checks["outbox"] = (
        f"{len(events)} events recorded with their orders, "
        f"{sum(1 for e in events if e['published'])} published; {copies} published again by a "
        "relay that died between publishing and marking (dropped by the consumer's dedup)"
    )


def _read_model(orders: Mapping[str, Any], model: Mapping[str, Any], result: Verification) -> None:
    kept: Mapping[str, Any] = model["orders"]
    in_order = 0
    for order_id, order in orders.items():
        recorded = [e["kind"] for e in order["events"]]
        seen = (kept.get(order_id) or {}).get("history", [])
        if seen == recorded:
            in_order += bool(recorded)
        elif sorted(seen) == sorted(recorded):
            result.fail("per-key-order", f"order {order_id}: applied {seen}, recorded {recorded}")
        else:
            result.fail("model-mismatch", f"order {order_id}: model {seen}, database {recorded}")
        compensated = (order["saga"] or {}).get("status") == "compensated"
        for kind, undo in _UNDONE_BY.items():
            if compensated and kind in recorded and undo not in recorded:
                result.fail("compensation-incomplete", f"order {order_id}: {kind}, never {undo}")
    expected: Counter[str] = Counter()
    for order in orders.values():
        if (order["sql"] or {}).get("status") == "confirmed":
            expected[order["product"]] += order["qty"]
    sales: Mapping[str, int] = model["sales"]
    for product in sorted(set(expected) | set(sales)):
        if sales.get(product, 0) != expected[product]:
            result.fail(
                "sales-counter",
                f"{product}: CRDT sales counter {sales.get(product, 0)}, confirmed orders "
                f"{expected[product]} units",
            )
    if model["in_progress"] != 0:
        result.fail(
            "in-progress-counter",
            f"orders-in-progress counter {model['in_progress']} with every saga ended",
        )
    if model["dead_letters"]:
        result.fail("dead-lettered", f"{model['dead_letters']} events in the dead-letter stream")
    result.checks["read model"] = (
        f"{sum(model['applied'].values())} events applied, {in_order} orders' events in order "
        f"({model.get('early', 0)} early events held back until their predecessor applied); "
        f"sales counters ({model['counters']}) {sum(sales.values())} units = confirmed orders "
        f"{sum(expected.values())}; orders-in-progress counter {model['in_progress']}"
    )
