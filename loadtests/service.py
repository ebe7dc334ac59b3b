"""The shop under load: payments, orders placed by a saga, and counters, behind the middleware.

Every side effect is written to a *ledger* in Redis, under keys of its own, so the verifier
can count afterwards what really happened: how often each payment was charged, which orders
exist, how many units each product sold, how often each counter increment ran.

Placing an order (``POST /orders``) starts the ``place-order`` saga (:mod:`loadtests.shop_saga`:
reserve stock, charge, confirm; compensations release and refund) and waits up to
``saga_wait`` seconds for an orchestrator to finish it: 201 ``created``, 200 ``out_of_stock``,
``declined`` or ``cancelled`` (compensated), or 202 ``pending`` (still running; ``GET
/orders/{id}`` tells later). Each step records the order's event with its outbox row in the
shop's database (:mod:`loadtests.shop_db`); a relay publishes them to a Redis stream and a
consumer keeps the read model with CRDT counters (:mod:`loadtests.read_model`). The
orchestrators, the relay and the consumer run either as processes of their own (``patterns=
"external"``: ``python -m loadtests.workers``, what the fault driver starts and kills) or
inside this process (``"inprocess"``, the default: the embedded demo and in-process tests).
``GET /_patterns`` reports what they did, for :func:`loadtests.verify.patterns_check`.

``create_app(client)`` builds the app on any ``redis.asyncio``-compatible client (a real
server or :func:`idemkit.embedded_redis`). ``app_factory()`` is the uvicorn entry point::

    REDIS_URL=redis://127.0.0.1:7001/0 SHOP_DB=postgresql://... \
        uvicorn loadtests.service:app_factory --factory --workers 2

Without ``REDIS_URL`` it runs on the embedded store (one worker only: the state lives in the
process); without ``SHOP_DB`` on a private SQLite file (one worker only, too: several
workers need a database they share). ``SHOP_PATTERNS=external`` leaves the sagas, the relay
and the consumer to worker processes. ``SHOP_BROKEN`` plants one defect, so the verifier's
own tests can prove that it catches each:

* ``double-charge``: ``/payments`` is exempt from the middleware;
* ``no-middleware``: the idempotency middleware is removed altogether;
* ``oversell``: stock is reserved without the lock (read, think, write);
* ``unstable-replay``: a middleware *outside* the idempotency middleware stamps every JSON
  answer with the time it was sent, so a replay no longer equals the first answer;
* ``saga-no-keys``: the saga's charge and refund ignore their idempotency keys;
* ``consumer-no-dedup``: the read model applies every delivery (no dedup, no order check).

The last two need a fault to show (an orchestrator or a consumer killed at its fault point);
the others show in any run. The shop uses only idemkit's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from idemkit import IdempotencyMiddleware, StoreUnavailableError, fencing_token
from idemkit.patterns import (
    RedisSagaLog,
    SagaBusyError,
    SagaConflictError,
    SagaOrchestrator,
    SagaOutcome,
)
from loadtests.counters import Counters
from loadtests.read_model import group_backlog, read_model_state
from loadtests.shop_db import ShopDb
from loadtests.shop_saga import (
    ORDERS_LEDGER,
    SAGA_NAME,
    OrderSaga,
    inventory_key,
    outcome_status,
    payment_key,
)
from loadtests.workers import InProcessWorkers, orchestrator_for

__all__ = [
    "BROKEN_MODES",
    "DEFAULT_STOCK",
    "PATTERN_BROKEN_MODES",
    "app_factory",
    "create_app",
    "read_ledger",
]

# Defects any run shows, and defects of the transaction patterns, which a fault must provoke.
HTTP_BROKEN_MODES = ("double-charge", "no-middleware", "oversell", "unstable-replay")
PATTERN_BROKEN_MODES = ("saga-no-keys", "consumer-no-dedup")
BROKEN_MODES = HTTP_BROKEN_MODES + PATTERN_BROKEN_MODES

# Two scarce products that every user fights over, and plenty of everything else.
DEFAULT_STOCK: dict[str, int] = {
    "hot-1": 60,
    "hot-2": 60,
    **{f"sku-{i}": 1_000_000 for i in range(1, 6)},
}

# Ledger keys, read by the verifier.
CHARGES = "ledger:charges"  # hash payment_id -> times charged
ORDERS = ORDERS_LEDGER  # hash order_id -> product, once its saga confirmed it
ORDER_RUNS = "ledger:order-runs"  # hash order_id -> times the handler ran
INCREMENTS = "ledger:increments"  # hash "<counter>/<id>" -> times applied
EVENTS = "ledger:events"  # hash middleware event -> count
PRODUCTS = "shop:products"  # set of product names
COUNTER_NAMES = "shop:counter-names"  # set of counter names

# A payment is charged under the fencing token the middleware granted to this execution, and
# the charge remembers that it happened. Together they close both windows a worker paused
# past its lease leaves open: paused *before* charging, its older token is refused; paused
# *after* charging but before the middleware stored the response, the retry (newer token)
# finds the charge already applied and returns it instead of charging again.
# KEYS[1] the payment's fence  KEYS[2] charges hash  ARGV[1] token  ARGV[2] payment id
# Returns the number of charges, or -1 when fenced off.
_CHARGE = """
local newest = redis.call('GET', KEYS[1])
if newest and tonumber(ARGV[1]) < tonumber(newest) then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
if newest then
  local done = redis.call('HGET', KEYS[2], ARGV[2])
  if done then return tonumber(done) end
end
return redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
"""

_MAX_LATENCY_MS = 5000
_ORDER_ID = re.compile(r"[A-Za-z0-9_.:-]{1,100}")  # a saga id: no braces, bounded
_SAGA_STATUS_FIELDS: Final = ("name", "data", "status", "failed_step", "error")


class _Events:
    """Middleware events counted in memory and flushed to the ledger twice a second (one
    round trip per flush, not per request)."""

    def __init__(self) -> None:
        self.pending: Counter[str] = Counter()

    def __call__(self, event: object) -> None:
        # An idemkit.observe.Event (name, outcome) or, from older middleware, the outcome.
        if getattr(event, "name", "idempotency.request") != "idempotency.request":
            return
        self.pending[str(getattr(event, "outcome", event))] += 1

    async def flush(self, client: Any) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, Counter()
        try:
            pipe = client.pipeline(transaction=False)
            for event, n in batch.items():
                pipe.hincrby(EVENTS, event, n)
            await pipe.execute()
        except Exception:  # Redis down: keep the counts for the next flush
            self.pending.update(batch)


class Shop:
    def __init__(
        self,
        client: Any,
        *,
        broken: str | None,
        stock: Mapping[str, int],
        database: str | None = None,
        patterns: str = "inprocess",
        saga_wait: float = 1.0,
        saga_lease: float = 2.0,
    ) -> None:
        if broken is not None and broken not in BROKEN_MODES:
            raise ValueError(f"SHOP_BROKEN must be one of {BROKEN_MODES}, got {broken!r}")
        if patterns not in ("inprocess", "external"):
            raise ValueError(f"patterns must be 'inprocess' or 'external', got {patterns!r}")
        self.client = client
        self.broken = broken
        self.stock = dict(stock)
        self.database = database
        self.patterns = patterns
        self.saga_wait = saga_wait
        self.saga_lease_ms = int(saga_lease * 1000)
        self.charge_script = client.register_script(_CHARGE)
        self.events = _Events()
        self.counters = Counters(client)
        self.saga_log = RedisSagaLog(client)
        # Built at startup (the lifespan), when the database exists.
        self.db: ShopDb
        self.orchestrator: SagaOrchestrator
        self._private_dir: str | None = None
        self._workers: InProcessWorkers | None = None

    async def setup(self) -> None:
        """Stock every product once; later workers (and restarts) keep what is there. Open
        the database and create its tables."""
        pipe = self.client.pipeline(transaction=False)
        for product, units in self.stock.items():
            pipe.set(inventory_key(product, "stock"), units, nx=True)
            pipe.set(inventory_key(product, "initial"), units, nx=True)
            pipe.sadd(PRODUCTS, product)
        await pipe.execute()
        url = self.database
        if url is None:
            self._private_dir = tempfile.mkdtemp(prefix="idemkit-shop-")
            url = f"sqlite:///{self._private_dir}/shop.db"
        self.db = ShopDb(url)
        await asyncio.to_thread(self.db.setup)
        order_saga = OrderSaga(self.client, self.db, broken=self.broken)
        self.orchestrator = orchestrator_for(order_saga, lease_ms=self.saga_lease_ms)
        if self.patterns == "inprocess":
            self._workers = InProcessWorkers(
                self.orchestrator,
                self.db,
                self.client,
                lease_ms=self.saga_lease_ms,
                broken=self.broken,
            )
            await self._workers.start()

    async def teardown(self) -> None:
        if self._workers is not None:
            await self._workers.stop()
        await asyncio.to_thread(self.db.close)
        if self._private_dir is not None:
            shutil.rmtree(self._private_dir, ignore_errors=True)

    # -- handlers -------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "pid": os.getpid()})

    async def pay(self, request: Request) -> Response:
        doc = await _json(request)
        payment_id = str(doc.get("payment_id", ""))
        amount = doc.get("amount")
        if not payment_id or not isinstance(amount, int) or amount <= 0:
            return _error(400, "payment_id (string) and amount (positive integer) are required")
        await _simulated_latency(request)
        token = fencing_token(request)
        if token is None:  # not under the middleware (the broken variant): unfenced
            charged = await self.client.hincrby(CHARGES, payment_id, 1)
        else:
            charged = await self.charge_script(
                keys=[f"ledger:charge-fence:{payment_id}", CHARGES], args=[token, payment_id]
            )
            if charged == -1:
                return _error(409, "a newer attempt of this payment owns it; this one was fenced")
        return JSONResponse(
            {"payment_id": payment_id, "amount": amount, "charge": charged, "pid": os.getpid()},
            status_code=201,
        )

    async def order(self, request: Request) -> Response:
        doc = await _json(request)
        order_id = str(doc.get("order_id", ""))
        product = str(doc.get("product", ""))
        qty = doc.get("qty", 1)
        amount = doc.get("amount", 100 * qty if isinstance(qty, int) else 0)
        if (
            not _ORDER_ID.fullmatch(order_id)
            or product not in self.stock
            or not isinstance(qty, int)
            or qty <= 0
            or not isinstance(amount, int)
            or amount <= 0
        ):
            return _error(
                400,
                "order_id (1..100 of A-Z a-z 0-9 _ . : -), a known product, a positive qty and "
                "a positive amount (cents) are required",
            )
        data = {
            "order_id": order_id,
            "product": product,
            "qty": qty,
            "amount": amount,
            "card": str(doc.get("card", "")),
            "ship_to": str(doc.get("ship_to", "")),
        }
        await self.client.hincrby(ORDER_RUNS, order_id, 1)
        await _simulated_latency(request)
        try:
            outcome = await self.orchestrator.start(SAGA_NAME, order_id, data, wait=1.0)
        except SagaConflictError:
            return _error(422, "this order_id was already placed with another order")
        except SagaBusyError:
            return _error(503, "the order is being placed, retry", retry_after=1)
        outcome = await self._wait_for(outcome)
        status = outcome_status(outcome.status, outcome.failed_step, outcome.error)
        if status == "created":
            answer = {"order_id": order_id, "product": product, "qty": qty, "status": status}
            return JSONResponse(answer, status_code=201)
        code = 202 if status == "pending" else 200
        return JSONResponse({"order_id": order_id, "status": status}, status_code=code)

    async def _wait_for(self, outcome: SagaOutcome) -> SagaOutcome:
        """The saga's outcome once an orchestrator finished it, or where it stands after
        ``saga_wait`` seconds."""
        deadline = time.monotonic() + self.saga_wait
        delay = 0.005
        while outcome.status in ("running", "compensating") and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
            outcome = await self.orchestrator.status(outcome.saga_id) or outcome
        return outcome

    async def order_status(self, request: Request) -> Response:
        order_id = request.path_params["order_id"]
        outcome = await self.orchestrator.status(order_id)
        if outcome is None:
            return _error(404, "no such order")
        status = outcome_status(outcome.status, outcome.failed_step, outcome.error)
        return JSONResponse({"order_id": order_id, "status": status, "saga": outcome.status})

    async def increment(self, request: Request) -> Response:
        name = request.path_params["name"]
        doc = await _json(request)
        inc_id = str(doc.get("id", ""))
        if not inc_id:
            return _error(400, "id is required")
        # One transaction: the counter (a CRDT) and its ledger entry move together even if
        # the worker dies right after.
        async with self.client.pipeline(transaction=True) as pipe:
            await self.counters.aqueue(pipe, name, 1)
            pipe.hincrby(INCREMENTS, f"{name}/{inc_id}", 1)
            pipe.sadd(COUNTER_NAMES, name)
            await pipe.execute()
        return JSONResponse({"counter": name, "id": inc_id, "status": "applied"}, status_code=200)

    async def ledger(self, request: Request) -> Response:
        return JSONResponse(await read_ledger(self.client))

    async def patterns_report(self, request: Request) -> Response:
        summary = request.query_params.get("summary") in ("1", "true")
        return JSONResponse(await self.audit(summary=summary))

    # -- what the patterns did -------------------------------------------------------------

    async def settle_state(self) -> dict[str, Any]:
        """What is still in motion: unfinished sagas, unpublished events, unapplied ones."""
        backlog = await group_backlog(self.client)
        state = {
            "unfinished_sagas": int(await self.client.zcard(self.saga_log.active_key)),
            "parked_sagas": int(await self.client.zcard(self.saga_log.parked_key)),
            "unpublished_events": await self.db.call(lambda db: db.unpublished()),
            "stream_lag": backlog["lag"],
            "stream_pending": backlog["pending"],
        }
        state["settled"] = not (
            state["unfinished_sagas"]
            or state["unpublished_events"]
            or state["stream_lag"]
            or state["stream_pending"]
        )
        return state

    async def audit(self, *, summary: bool = False) -> dict[str, Any]:
        """Every order the shop was asked for, as each store sees it (see verify_patterns)."""
        settle = await self.settle_state()
        if summary:
            return settle
        order_ids = sorted(_s(k) for k in await self.client.hkeys(ORDER_RUNS))
        pipe = self.client.pipeline(transaction=False)
        for order_id in order_ids:
            pipe.hmget(self.saga_log.fence.key(order_id), _SAGA_STATUS_FIELDS)
            pipe.hmget(payment_key(order_id), ["charges", "refunds"])
        for product in self.stock:
            pipe.hgetall(inventory_key(product, "reservations"))
        replies = await pipe.execute()
        reserved: dict[str, int] = {}
        for reservations in replies[2 * len(order_ids) :]:
            reserved.update({_s(k): int(v) for k, v in reservations.items()})
        sql_orders = await self.db.call(lambda db: db.orders())
        sql_events = await self.db.call(lambda db: db.events())
        orders: dict[str, Any] = {}
        for i, order_id in enumerate(order_ids):
            saga_fields, payment = replies[2 * i], replies[2 * i + 1]
            values = (_s(v) if v else None for v in saga_fields)
            saga = dict(zip(_SAGA_STATUS_FIELDS, values, strict=True))
            data = json.loads(saga["data"]) if saga["data"] else {}
            orders[order_id] = {
                "saga": None
                if saga["name"] is None
                else {
                    "status": saga["status"],
                    "failed_step": saga["failed_step"],
                    "error": saga["error"],
                },
                "product": data.get("product"),
                "qty": data.get("qty"),
                "charges": int(payment[0] or 0),
                "refunds": int(payment[1] or 0),
                "reserved": reserved.get(order_id, 0),
                "sql": sql_orders.get(order_id),
                "events": sql_events.get(order_id, []),
            }
        model = await read_model_state(self.client, self.counters)
        return {"settle": settle, "orders": orders, "model": model}

    # -- app ------------------------------------------------------------------------------

    def app(self, **options: Any) -> Starlette:
        options.setdefault("lease", 2.0)
        exempt = ["/payments*"] if self.broken == "double-charge" else []
        idempotency = Middleware(
            IdempotencyMiddleware,
            store=self.client,
            require_key=["/payments*", "/orders*", "/counters/*"],
            exempt_paths=exempt,
            observer=self.events,
            **options,
        )
        middleware = {
            "no-middleware": [],
            "unstable-replay": [Middleware(_StampAnswers), idempotency],
        }.get(self.broken or "", [idempotency])
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/payments", self.pay, methods=["POST"]),
            Route("/orders", self.order, methods=["POST"]),
            Route("/orders/{order_id}", self.order_status, methods=["GET"]),
            Route("/counters/{name}/increment", self.increment, methods=["POST"]),
            Route("/_ledger", self.ledger, methods=["GET"]),
            Route("/_patterns", self.patterns_report, methods=["GET"]),
        ]
        return Starlette(
            routes=routes,
            middleware=middleware,
            exception_handlers={
                RedisError: _store_down,
                OSError: _store_down,
                StoreUnavailableError: _lock_store_down,
            },
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.setup()
        flusher = asyncio.create_task(self._flush_events())
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self.events.flush(self.client)
            await self.teardown()

    async def _flush_events(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self.events.flush(self.client)


async def _json(request: Request) -> dict[str, Any]:
    try:
        doc = json.loads(await request.body() or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


async def _simulated_latency(request: Request) -> None:
    # A header, not a body field: headers are not part of the request fingerprint, so a
    # client may ask for a slow first attempt and retry the very same request.
    raw = request.headers.get("x-simulate-latency-ms")
    if raw and raw.isdigit():
        await asyncio.sleep(min(int(raw), _MAX_LATENCY_MS) / 1000)


async def _store_down(request: Request, exc: Exception) -> Response:
    if "connecting to" in str(exc):
        # Nothing reached Redis, so the effect did not happen: 503 releases the idempotency
        # key and the client's retry runs the handler again.
        return _error(503, f"shop store unavailable: {type(exc).__name__}", retry_after=1)
    # The command was sent and the reply lost (reset while reading, timeout): it may have
    # been applied. A 500 is stored and replayed, so a retry cannot apply it a second time.
    return _error(500, f"outcome unknown, not retried: {type(exc).__name__}")


async def _lock_store_down(request: Request, exc: Exception) -> Response:
    # Raised by idemkit before a write (a saga could not be logged): 503, which releases the
    # idempotency key, lets the client retry the same order; starting its saga is idempotent.
    return _error(503, "shop store unavailable, retry", retry_after=1)


class _StampAnswers:
    """The ``unstable-replay`` defect: stamps JSON answers with the time they were sent.

    Placed outside the idempotency middleware, it changes replays too, so a retry no longer
    gets the answer the first attempt got.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            with contextlib.suppress(ValueError):
                doc = json.loads(body)
                if isinstance(doc, dict):
                    body = json.dumps({**doc, "served_at": time.time()}).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, stamped)


def _error(status: int, detail: str, *, retry_after: int | None = None) -> Response:
    headers = {"retry-after": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


async def read_ledger(client: Any) -> dict[str, Any]:
    """Everything the ledger check needs, as plain JSON-able data."""
    products = sorted(_s(p) for p in await client.smembers(PRODUCTS))
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(CHARGES)
    pipe.hgetall(ORDERS)
    pipe.hgetall(ORDER_RUNS)
    pipe.hgetall(INCREMENTS)
    pipe.hgetall(EVENTS)
    for product in products:
        pipe.get(inventory_key(product, "initial"))
        pipe.get(inventory_key(product, "stock"))
        pipe.hgetall(inventory_key(product, "reservations"))
    replies = await pipe.execute()
    charges, orders, order_runs, increments, events = replies[:5]
    inventory: dict[str, Any] = {}
    for i, product in enumerate(products):
        initial, stock, reservations = replies[5 + 3 * i : 8 + 3 * i]
        held = {_s(k): int(v) for k, v in reservations.items()}
        inventory[product] = {
            "initial": int(initial or 0),
            "stock": int(stock or 0),
            # Units held by reservations: sales are counted by the read model (a CRDT).
            "sold": sum(held.values()),
            "reservations": held,
        }
    names = sorted({_s(k).split("/", 1)[0] for k in increments})
    return {
        "charges": _ints(charges),
        "orders": {_s(k): _s(v) for k, v in orders.items()},
        "order_runs": _ints(order_runs),
        "increments": _ints(increments),
        "counters": await Counters(client).values(names),
        "inventory": inventory,
        "events": _ints(events),
    }


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ints(mapping: Mapping[Any, Any]) -> dict[str, int]:
    return {_s(k): int(v) for k, v in mapping.items()}


def create_app(
    client: Any,
    *,
    broken: str | None = None,
    stock: Mapping[str, int] = DEFAULT_STOCK,
    database: str | None = None,
    patterns: str = "inprocess",
    saga_wait: float = 1.0,
    **options: Any,
) -> Starlette:
    """The shop on ``client``; ``options`` go to :class:`IdempotencyMiddleware`.

    ``database``: the shop's database URL (default: a private SQLite file, removed at
    shutdown); ``patterns``: run the saga orchestrator, the relay and the consumer
    ``"inprocess"`` or leave them to ``"external"`` worker processes; ``saga_wait``: how long
    ``POST /orders`` waits for the saga before it answers 202.
    """
    shop = Shop(
        client,
        broken=broken,
        stock=stock,
        database=database,
        patterns=patterns,
        saga_wait=saga_wait,
        saga_lease=float(options.get("lease", 2.0)),
    )
    return shop.app(**options)


def app_factory() -> Starlette:
    """uvicorn ``--factory`` entry point: ``REDIS_URL`` (else embedded), ``SHOP_DB`` (else a
    private SQLite file), ``SHOP_PATTERNS``, ``SHOP_BROKEN``, ``SHOP_LEASE``,
    ``SHOP_SAGA_WAIT``."""
    url = os.environ.get("REDIS_URL")
    if url:
        import redis.asyncio as aioredis

        client: Any = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    else:
        from idemkit.embedded import embedded_redis

        client = embedded_redis()
    return create_app(
        client,
        broken=os.environ.get("SHOP_BROKEN") or None,
        database=os.environ.get("SHOP_DB") or None,
        patterns=os.environ.get("SHOP_PATTERNS", "inprocess"),
        saga_wait=float(os.environ.get("SHOP_SAGA_WAIT", "1.0")),
        lease=float(os.environ.get("SHOP_LEASE", "2.0")),
    )
