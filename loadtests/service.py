"""The shop under load: orders, payments, inventory and counters behind the middleware.

Every side effect is written to a *ledger* in Redis, under keys of its own, so the verifier
can count afterwards what really happened: how often each payment was charged, which orders
exist, how many units each product sold, how often each counter increment ran.

``create_app(client)`` builds the app on any ``redis.asyncio``-compatible client (a real
server or :func:`idemkit.embedded_redis`). ``app_factory()`` is the uvicorn entry point::

    REDIS_URL=redis://127.0.0.1:7001/0 uvicorn loadtests.service:app_factory --factory --workers 2

Without ``REDIS_URL`` it runs on the embedded store (one worker only: the state lives in the
process). ``SHOP_BROKEN`` plants one defect, so the verifier's own tests can prove that it
catches each:

* ``double-charge``: ``/payments`` is exempt from the middleware;
* ``no-middleware``: the idempotency middleware is removed altogether;
* ``oversell``: stock is reserved without the lock (read, think, write);
* ``unstable-replay``: a middleware *outside* the idempotency middleware stamps every JSON
  answer with the time it was sent, so a replay no longer equals the first answer.

The shop uses only idemkit's public API: ``IdempotencyMiddleware``, ``fencing_token`` and
``FencedLock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from idemkit import (
    FencedLock,
    IdempotencyMiddleware,
    LockTimeoutError,
    StoreUnavailableError,
    fencing_token,
)

__all__ = [
    "BROKEN_MODES",
    "DEFAULT_STOCK",
    "app_factory",
    "create_app",
    "read_ledger",
]

BROKEN_MODES = ("double-charge", "no-middleware", "oversell", "unstable-replay")

# Two scarce products that every user fights over, and plenty of everything else.
DEFAULT_STOCK: dict[str, int] = {
    "hot-1": 60,
    "hot-2": 60,
    **{f"sku-{i}": 1_000_000 for i in range(1, 6)},
}

# Ledger keys, read by the verifier.
CHARGES = "ledger:charges"  # hash payment_id -> times charged
ORDERS = "ledger:orders"  # hash order_id -> product
ORDER_RUNS = "ledger:order-runs"  # hash order_id -> times the handler ran
INCREMENTS = "ledger:increments"  # hash "<counter>/<id>" -> times applied
EVENTS = "ledger:events"  # hash middleware event -> count
PRODUCTS = "shop:products"  # set of product names


def _inv(product: str, part: str) -> str:
    # One hash tag per product: the reservation script touches one Cluster slot.
    return f"shop:{{inv:{product}}}:{part}"


def _counter(name: str) -> str:
    return f"shop:counter:{name}"


# Reserve stock for an order, fenced: a lock holder whose lease expired (paused, slow) and
# whose token is older than one already seen is refused, so it cannot write stale stock.
# KEYS[1] stock  KEYS[2] fence  KEYS[3] reservations hash  KEYS[4] units sold (counter)
# ARGV[1] fencing token  ARGV[2] order id  ARGV[3] quantity
# Returns 1 reserved (or already reserved by this order), 0 out of stock, -1 fenced off.
_RESERVE = """
local fence = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < fence then return -1 end
redis.call('SET', KEYS[2], ARGV[1])
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then return 1 end
local qty = tonumber(ARGV[3])
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
if stock < qty then return 0 end
redis.call('DECRBY', KEYS[1], qty)
redis.call('HSET', KEYS[3], ARGV[2], qty)
redis.call('INCRBY', KEYS[4], qty)
return 1
"""

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

_LOCKS = "shop-lock:"
_LOCK_LEASE_MS = 2000
_LOCK_WAIT_S = 3.0
_MAX_LATENCY_MS = 5000


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
    def __init__(self, client: Any, *, broken: str | None, stock: Mapping[str, int]) -> None:
        if broken is not None and broken not in BROKEN_MODES:
            raise ValueError(f"SHOP_BROKEN must be one of {BROKEN_MODES}, got {broken!r}")
        self.client = client
        self.broken = broken
        self.stock = dict(stock)
        self.reserve_script = client.register_script(_RESERVE)
        self.charge_script = client.register_script(_CHARGE)
        self.events = _Events()

    async def setup(self) -> None:
        """Stock every product once; later workers (and restarts) keep what is there."""
        pipe = self.client.pipeline(transaction=False)
        for product, units in self.stock.items():
            pipe.set(_inv(product, "stock"), units, nx=True)
            pipe.set(_inv(product, "initial"), units, nx=True)
            pipe.sadd(PRODUCTS, product)
        await pipe.execute()

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
        if not order_id or product not in self.stock or not isinstance(qty, int) or qty <= 0:
            return _error(400, "order_id, a known product and a positive qty are required")
        await self.client.hincrby(ORDER_RUNS, order_id, 1)
        await _simulated_latency(request)
        reserved: bool | None
        if self.broken == "oversell":
            reserved = await self._reserve_unlocked(order_id, product, qty)
        else:
            reserved = await self._reserve_locked(order_id, product, qty)
        if reserved is None:
            # 503 releases the idempotency key: the client may retry the same request.
            return _error(503, "inventory busy, retry", retry_after=1)
        if not reserved:
            return JSONResponse({"order_id": order_id, "status": "out_of_stock"}, status_code=200)
        await self.client.hset(ORDERS, order_id, product)
        return JSONResponse(
            {"order_id": order_id, "product": product, "qty": qty, "status": "created"},
            status_code=201,
        )

    async def increment(self, request: Request) -> Response:
        name = request.path_params["name"]
        doc = await _json(request)
        inc_id = str(doc.get("id", ""))
        if not inc_id:
            return _error(400, "id is required")
        # One transaction: the counter and its ledger entry move together even if the
        # worker dies right after.
        pipe = self.client.pipeline(transaction=True)
        pipe.incr(_counter(name))
        pipe.hincrby(INCREMENTS, f"{name}/{inc_id}", 1)
        value, _ = await pipe.execute()
        return JSONResponse({"counter": name, "value": int(value)}, status_code=200)

    async def ledger(self, request: Request) -> Response:
        return JSONResponse(await read_ledger(self.client))

    # -- inventory ------------------------------------------------------------------------

    async def _reserve_locked(self, order_id: str, product: str, qty: int) -> bool | None:
        """Reserve under the fenced lock; None when the lock stayed busy for too long."""
        lock = FencedLock(self.client, f"inv:{product}", lease_ms=_LOCK_LEASE_MS, prefix=_LOCKS)
        try:
            token = await lock.acquire(timeout=_LOCK_WAIT_S)
        except LockTimeoutError:
            return None
        try:
            result = await self.reserve_script(
                keys=[
                    _inv(product, "stock"),
                    _inv(product, "fence"),
                    _inv(product, "reservations"),
                    _inv(product, "sold"),
                ],
                args=[token, order_id, qty],
            )
        finally:
            # A lost lease or a dead connection: the lease runs out on its own.
            with contextlib.suppress(Exception):
                await lock.release()
        if int(result) < 0:
            return None  # fenced off: our lease had expired and a newer holder wrote
        return bool(int(result))

    async def _reserve_unlocked(self, order_id: str, product: str, qty: int) -> bool:
        """The broken variant: read, think, write. Two buyers can both see the last unit."""
        stock = int(await self.client.get(_inv(product, "stock")) or 0)
        await asyncio.sleep(0.05)  # long enough that concurrent buyers overlap under load
        if stock < qty:
            return False
        pipe = self.client.pipeline(transaction=False)
        pipe.set(_inv(product, "stock"), stock - qty)
        pipe.hset(_inv(product, "reservations"), order_id, qty)
        pipe.incrby(_inv(product, "sold"), qty)
        await pipe.execute()
        return True

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
            Route("/counters/{name}/increment", self.increment, methods=["POST"]),
            Route("/_ledger", self.ledger, methods=["GET"]),
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
    # The inventory lock could not be taken: nothing was reserved yet, so 503 (which
    # releases the idempotency key) lets the client retry the same order.
    return _error(503, "inventory lock unavailable, retry", retry_after=1)


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
    """Everything the verifier needs, as plain JSON-able data, in one pipeline."""
    products = sorted(_s(p) for p in await client.smembers(PRODUCTS))
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(CHARGES)
    pipe.hgetall(ORDERS)
    pipe.hgetall(ORDER_RUNS)
    pipe.hgetall(INCREMENTS)
    pipe.hgetall(EVENTS)
    for product in products:
        pipe.get(_inv(product, "initial"))
        pipe.get(_inv(product, "stock"))
        pipe.get(_inv(product, "sold"))
        pipe.hgetall(_inv(product, "reservations"))
    replies = await pipe.execute()
    charges, orders, order_runs, increments, events = replies[:5]
    inventory: dict[str, Any] = {}
    for i, product in enumerate(products):
        initial, stock, sold, reservations = replies[5 + 4 * i : 9 + 4 * i]
        inventory[product] = {
            "initial": int(initial or 0),
            "stock": int(stock or 0),
            "sold": int(sold or 0),
            "reservations": {_s(k): int(v) for k, v in reservations.items()},
        }
    names = sorted({_s(k).split("/", 1)[0] for k in increments})
    values = await client.mget([_counter(n) for n in names]) if names else []
    return {
        "charges": _ints(charges),
        "orders": {_s(k): _s(v) for k, v in orders.items()},
        "order_runs": _ints(order_runs),
        "increments": _ints(increments),
        "counters": {n: int(v or 0) for n, v in zip(names, values, strict=True)},
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
    **options: Any,
) -> Starlette:
    """The shop on ``client``; ``options`` go to :class:`IdempotencyMiddleware`."""
    return Shop(client, broken=broken, stock=stock).app(**options)


def app_factory() -> Starlette:
    """uvicorn ``--factory`` entry point: ``REDIS_URL`` (else embedded) and ``SHOP_BROKEN``."""
    url = os.environ.get("REDIS_URL")
    if url:
        import redis.asyncio as aioredis

        client: Any = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    else:
        from idemkit.embedded import embedded_redis

        client = embedded_redis()
    broken = os.environ.get("SHOP_BROKEN") or None
    lease = float(os.environ.get("SHOP_LEASE", "2.0"))
    return create_app(client, broken=broken, lease=lease)
