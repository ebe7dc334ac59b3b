"""Locust scenarios against the shop: clients that retry the way real ones do.

Usable with the plain CLI::

    locust -f loadtests/locustfile.py --headless -u 20 -r 20 -t 20s --host http://127.0.0.1:8000

Each client keeps one ``Idempotency-Key`` per logical operation and retries it after
timeouts, 409 (in flight) and 503 (store down), so retries are safe only if the service is.
Scenarios: a payment whose first attempt times out, concurrent duplicates of one payment, a
key reused with a different body (expects 422), orders racing for scarce stock, increments
of shared counters. Protocol outcomes are reported as extra Locust request rows of type
``IDEM`` (``replayed``, ``conflict-409``, ``mismatch-422``, ``unavailable-503``), so they
show up in the UI and the CSV next to the HTTP rows.

With ``LOADTEST_ACKS_DIR`` set, every acknowledgement (2xx for a payment, a created order,
an applied increment) is appended to ``acks-<pid>.jsonl`` there, for the verifier.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from typing import IO, Any

import gevent
from locust import HttpUser, between, events, task

HOT = ["hot-1", "hot-2"]
SKUS = [f"sku-{i}" for i in range(1, 6)]
COUNTERS = ["likes", "views", "carts"]

TIMEOUT = float(os.environ.get("LOADTEST_TIMEOUT", "1.5"))
MAX_ATTEMPTS = 12
MAX_RETRY_SECONDS = 12.0

# "Try again" (409, 502-504) or never answered (0). A stored 500 ("outcome unknown") is
# final: if Redis was down when it was stored, a retry after the lease would run it again.
_RETRYABLE = frozenset({0, 409, 502, 503, 504})

_acks: IO[str] | None = None


def _ack(kind: str, ident: str) -> None:
    global _acks
    directory = os.environ.get("LOADTEST_ACKS_DIR")
    if not directory:
        return
    if _acks is None:
        _acks = open(  # noqa: SIM115 - one file for the life of the process
            os.path.join(directory, f"acks-{os.getpid()}.jsonl"), "a", encoding="utf-8"
        )
    _acks.write(json.dumps({"kind": kind, "id": ident}) + "\n")
    _acks.flush()


class ShopUser(HttpUser):
    wait_time = between(0.01, 0.1)

    # -- plumbing ---------------------------------------------------------------------------

    def _event(self, name: str) -> None:
        self.environment.events.request.fire(
            request_type="IDEM",
            name=name,
            response_time=0,
            response_length=0,
            exception=None,
            context={},
        )

    def _send(
        self, name: str, path: str, body: dict[str, Any], key: str, *, latency_ms: int = 0
    ) -> tuple[int, bool, dict[str, Any]]:
        """One attempt: (status, replayed, json body); status 0 for timeouts and resets."""
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        if latency_ms:
            headers["x-simulate-latency-ms"] = str(latency_ms)
        with self.client.post(
            path,
            data=json.dumps(body),
            headers=headers,
            name=name,
            timeout=TIMEOUT,
            catch_response=True,
        ) as response:
            status = response.status_code or 0
            replayed = response.headers.get("idempotent-replayed") == "true"
            if 200 <= status < 300:
                response.success()
                if replayed:
                    self._event("replayed")
            elif status == 409:
                response.success()  # the protocol working: the first attempt is in flight
                self._event("conflict-409")
            elif status == 422:
                response.success()
                self._event("mismatch-422")
            elif status == 503:
                response.failure("503 store unavailable")
                self._event("unavailable-503")
            elif status == 0:
                response.failure(f"no response: {type(response.error).__name__}")
            else:
                response.failure(f"HTTP {status}")
            try:
                doc = response.json() if status else {}
            except ValueError:
                doc = {}
            return status, replayed, doc if isinstance(doc, dict) else {}

    def _until_answered(
        self, name: str, path: str, body: dict[str, Any], key: str, *, first_latency_ms: int = 0
    ) -> tuple[int, dict[str, Any]]:
        """Retry the same request with the same key until a final answer (bounded)."""
        deadline = time.monotonic() + MAX_RETRY_SECONDS
        status, doc = 0, {}
        for attempt in range(MAX_ATTEMPTS):
            label = f"{name} [retry]" if attempt else name
            if attempt == 0 and first_latency_ms:
                label = f"{name} [slow first attempt]"
            status, _, doc = self._send(
                label, path, body, key, latency_ms=first_latency_ms if attempt == 0 else 0
            )
            if status not in _RETRYABLE:
                return status, doc
            if time.monotonic() > deadline:
                break
            gevent.sleep(random.uniform(0.2, 0.6) * min(attempt + 1, 3))
        return status, doc

    # -- scenarios --------------------------------------------------------------------------

    @task(4)
    def payment_retried_after_timeout(self) -> None:
        payment_id = f"pay-{uuid.uuid4().hex}"
        body = {"payment_id": payment_id, "amount": random.randint(100, 99_999)}
        key = str(uuid.uuid4())
        # One payment in four is slower than the client's patience: the retry is the point.
        slow = int(TIMEOUT * 1000) + 300 if random.random() < 0.25 else 0
        status, _ = self._until_answered(
            "POST /payments", "/payments", body, key, first_latency_ms=slow
        )
        if 200 <= status < 300:
            _ack("payments", payment_id)
            if random.random() < 0.3:
                # The same key reused for a different payment must be refused, never charged.
                changed = {**body, "amount": body["amount"] + 1}
                self._send("POST /payments [reused key]", "/payments", changed, key)

    @task(2)
    def concurrent_duplicates(self) -> None:
        payment_id = f"pay-{uuid.uuid4().hex}"
        body = {"payment_id": payment_id, "amount": random.randint(100, 99_999)}
        key = str(uuid.uuid4())
        jobs = [
            gevent.spawn(
                self._send, "POST /payments [duplicate]", "/payments", body, key, latency_ms=50
            )
            for _ in range(3)
        ]
        gevent.joinall(jobs, timeout=TIMEOUT * 2)
        statuses = [job.value[0] for job in jobs if job.value]
        answered = any(200 <= status < 300 for status in statuses)
        final = any(status not in _RETRYABLE for status in statuses)
        if not final:
            status, _ = self._until_answered("POST /payments", "/payments", body, key)
            answered = 200 <= status < 300
        if answered:
            _ack("payments", payment_id)

    @task(3)
    def order_scarce_stock(self) -> None:
        order_id = f"order-{uuid.uuid4().hex}"
        product = random.choice(HOT) if random.random() < 0.5 else random.choice(SKUS)
        body = {"order_id": order_id, "product": product, "qty": random.randint(1, 2)}
        status, doc = self._until_answered("POST /orders", "/orders", body, str(uuid.uuid4()))
        if status == 201 and doc.get("status") == "created":
            _ack("orders", order_id)

    @task(3)
    def increment_shared_counter(self) -> None:
        name = random.choice(COUNTERS)
        inc_id = uuid.uuid4().hex
        status, _ = self._until_answered(
            "POST /counters/increment", f"/counters/{name}/increment", {"id": inc_id}, inc_id
        )
        if status == 200:
            _ack("increments", f"{name}/{inc_id}")


# -- latency record for the driver's report --------------------------------------------------
# Locust's own "Aggregated" row mixes the IDEM rows (latency 0) into the percentiles, so the
# HTTP latencies are kept here too: a millisecond histogram overall and per second.

_started = time.time()
_latency: Counter[int] = Counter()
_per_second: dict[int, Counter[int]] = defaultdict(Counter)
_failures_per_second: Counter[int] = Counter()


@events.request.add_listener
def _on_request(
    request_type: str, response_time: float, exception: BaseException | None, **_: Any
) -> None:
    if request_type == "IDEM":
        return
    ms = round(response_time)
    second = int(time.time() - _started)
    _latency[ms] += 1
    _per_second[second][ms] += 1
    if exception is not None:
        _failures_per_second[second] += 1


@events.quitting.add_listener
def _dump_latencies(**_: Any) -> None:
    directory = os.environ.get("LOADTEST_ACKS_DIR")
    if not directory:
        return
    doc = {
        "started": _started,
        "latency_ms": {str(k): v for k, v in _latency.items()},
        "per_second": {
            str(s): {str(k): v for k, v in hist.items()} for s, hist in _per_second.items()
        },
        "failures_per_second": {str(s): n for s, n in _failures_per_second.items()},
    }
    path = os.path.join(directory, f"latency-{os.getpid()}.json")
    with open(path, "w", encoding="utf-8") as out:
        json.dump(doc, out)
