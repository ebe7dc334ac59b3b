"""Locust scenarios against the shop, on the idempotency kit (:mod:`integrations.locust`).

Usable with the plain CLI, against a shop started any way::

    locust -f loadtests/locustfile.py --headless -u 20 -r 20 -t 20s \\
        --host http://127.0.0.1:8000 --idem-report out/report.md

Clients behave like careful ones: one ``Idempotency-Key`` per operation, retried with the
same body after timeouts, 409, 429 and 503. Payments have a share of concurrent duplicates,
of first attempts slowed past the client's patience (``x-simulate-latency-ms``) and
abandoned, of late retries and of keys reused with a changed amount; orders race for two
scarce products (now and then five buyers at the very same moment); counters are
incremented by many clients at once. An order is a saga (reserve, charge, confirm); a share
of cards is declined and a share of orders goes where no carrier ships, so sagas are
compensated too. At the end the kit verifies every key's answers;
:func:`loadtests.verify.patterns_check` waits for the sagas, the outbox relay and the read
model to settle and checks them (``GET /_patterns``), and :func:`loadtests.verify.ledger_check`
compares the shop's ledger (``GET /_ledger``) with what the clients were told. The exit
status is non-zero on any violation.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import between, task

from integrations.locust import IdempotentUser, Mix, Plan, RetryPolicy, Route
from loadtests.verify import ledger_check, patterns_check

HOT = ["hot-1", "hot-2"]
SKUS = [f"sku-{i}" for i in range(1, 6)]
COUNTERS = ["likes", "views", "carts"]

# Short enough that an attempt stuck on a paused worker is retried elsewhere in time.
TIMEOUT = float(os.environ.get("LOADTEST_TIMEOUT", "1.5"))


def payment() -> dict[str, object]:
    return {"payment_id": f"pay-{uuid.uuid4().hex}", "amount": random.randint(100, 99_999)}


def order(product: str | None = None) -> dict[str, object]:
    if product is None:
        product = random.choice(HOT) if random.random() < 0.5 else random.choice(SKUS)
    qty = random.randint(1, 2)
    body: dict[str, object] = {
        "order_id": f"order-{uuid.uuid4().hex}",
        "product": product,
        "qty": qty,
        "amount": qty * random.randint(500, 5_000),
    }
    luck = random.random()
    if luck < 0.05:
        body["card"] = "declined"  # the charge fails: the reservation is released
    elif luck < 0.10:
        body["ship_to"] = "atlantis"  # the confirmation fails: refunded, then released
    return body


def counter() -> dict[str, object]:
    return {"name": random.choice(COUNTERS)}


def increment() -> dict[str, object]:
    return {"id": uuid.uuid4().hex}


class ShopUser(IdempotentUser):
    wait_time = between(0.01, 0.1)
    retry = RetryPolicy(timeout=TIMEOUT, max_attempts=12, max_seconds=12.0)
    server_checks = [patterns_check, ledger_check]
    routes = [
        Route(
            "POST",
            "/payments",
            body=payment,
            weight=6,
            # One first payment attempt in four is slower than the client's patience: the
            # retry is the point (409 while it runs, then its replay).
            slow_headers={"x-simulate-latency-ms": str(int(TIMEOUT * 1000) + 300)},
            abandon_after=TIMEOUT,
            mix=Mix(duplicates=0.3, abandon=0.25, late_retry=0.2, reuse=0.3),
        ),
        Route("POST", "/orders", body=order, weight=3),
        Route("POST", "/counters/{name}/increment", params=counter, body=increment, weight=3),
    ]

    @task(1)
    def stock_rush(self) -> None:
        """Five buyers at once for one scarce product: only the lock keeps the stock right."""
        product = random.choice(HOT)
        rush = Route("POST", "/orders", body=lambda: order(product), name="POST /orders [rush]")
        self.concurrently(*[lambda: self.operate(rush, plan=Plan())] * 5)
