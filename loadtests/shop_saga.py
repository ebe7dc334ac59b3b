"""Placing an order is a saga: reserve stock, charge the card, confirm (ship).

::

    reserve ──▶ charge ──▶ confirm          out of stock / card declined / no carrier:
       ▲           ▲                        StepFailed, the steps before are compensated
    release ◀── refund ◀──┘                 (in reverse order)

Each step is one local change in the service that owns it, called with the saga step's
idempotency key and fenced by the saga's token, then recorded as an order event in the
shop's database, in one transaction with its outbox row (:mod:`loadtests.shop_db`):

* **reserve**: stock of the product, under the product's fenced inventory lock, keyed by the
  order (``shop:{inv:<product>}:*``). Out of stock is a definitive failure.
* **charge**: the order's payment (``shop:{pay:<order>}``) remembers each idempotency key
  it executed, so a charge called again after a crash answers the first charge.
* **confirm**: ships the order (a carrier refuses ``ship_to: "atlantis"``) and records it.

Compensations release the reservation and refund the charge; both accept "nothing to undo".
Every Redis write is fenced by the saga token too (the order's newest token is kept next to
its reservation and in its payment), so an orchestrator paused past its lease cannot charge,
reserve or release behind the back of the one that took the saga over.

``SHOP_BROKEN=saga-no-keys`` drops the idempotency keys from charge and refund (each call
charges again); ``oversell`` reserves without the inventory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

from idemkit import FencedLock, LockTimeoutError
from idemkit.errors import LeaseLostError, StaleTokenError
from idemkit.patterns import Saga, StepContext, StepFailed
from loadtests.shop_db import ShopDb

__all__ = [
    "ORDERS_LEDGER",
    "SAGA_NAME",
    "Inventory",
    "InventoryBusy",
    "OrderSaga",
    "Payments",
    "inventory_key",
    "outcome_status",
    "payment_key",
]

SAGA_NAME: Final = "place-order"
ORDERS_LEDGER: Final = "ledger:orders"  # hash order_id -> product, once confirmed
NO_CARRIER: Final = frozenset({"atlantis"})
DECLINED: Final = "declined"

_LOCK_PREFIX = "shop-lock:"
_LOCK_LEASE_MS = 2000
_LOCK_WAIT_S = 3.0


def _script(name: str) -> str:
    return resources.files("loadtests").joinpath("lua", f"{name}.lua").read_text("utf-8")


def inventory_key(product: str, part: str) -> str:
    """One hash tag per product: the reservation scripts touch one Cluster slot."""
    return f"shop:{{inv:{product}}}:{part}"


def payment_key(order_id: str) -> str:
    return f"shop:{{pay:{order_id}}}"


def outcome_status(status: str, failed_step: str | None, error: str | None) -> str:
    """What a client is told about an order whose saga is in ``status``."""
    if status == "completed":
        return "created"
    if status != "compensated":
        return "pending"
    if failed_step == "reserve" and error == "out of stock":
        return "out_of_stock"
    if failed_step == "charge" and error == "card declined":
        return "declined"
    return "cancelled"


class InventoryBusy(Exception):
    """The product's inventory lock stayed busy: nothing was reserved, try again."""


class Inventory:
    """Stock per product; reservations per order, under a fenced lock per product."""

    def __init__(self, client: Any, *, unlocked: bool = False) -> None:
        self.client = client
        self.unlocked = unlocked
        self._reserve = client.register_script(_script("inventory_reserve"))
        self._release = client.register_script(_script("inventory_release"))

    def keys(self, product: str) -> list[str]:
        return [
            inventory_key(product, "stock"),
            inventory_key(product, "fence"),
            inventory_key(product, "reservations"),
            inventory_key(product, "saga-fence"),
        ]

    async def _locked(self, product: str, run: Callable[[int], Awaitable[Any]]) -> int:
        lock = FencedLock(
            self.client, f"inv:{product}", lease_ms=_LOCK_LEASE_MS, prefix=_LOCK_PREFIX
        )
        try:
            token = await lock.acquire(timeout=_LOCK_WAIT_S)
        except LockTimeoutError:
            raise InventoryBusy(f"inventory of {product} busy") from None
        try:
            result = int(await run(token))
        finally:
            # A lost lease or a dead connection: the lease runs out on its own.
            with contextlib.suppress(Exception):
                await lock.release()
        if result == -1:
            # Our inventory lease expired and a newer holder wrote: nothing was done.
            raise InventoryBusy(f"inventory lock of {product} lost")
        if result == -2:
            raise LeaseLostError("a newer orchestrator has taken this order over")
        return result

    async def reserve(self, order_id: str, product: str, qty: int, saga_token: int) -> bool:
        if self.unlocked:
            return await self._reserve_unlocked(order_id, product, qty)
        keys = self.keys(product)
        result = await self._locked(
            product,
            lambda token: self._reserve(keys=keys, args=[token, order_id, qty, saga_token]),
        )
        return result == 1

    async def release(self, order_id: str, product: str, saga_token: int) -> int:
        keys = self.keys(product)
        if self.unlocked:
            held = await self.client.hget(keys[2], order_id)
            if held is None:
                return 0
            pipe = self.client.pipeline(transaction=True)
            pipe.hdel(keys[2], order_id)
            pipe.incrby(keys[0], int(held))
            await pipe.execute()
            return int(held)
        return await self._locked(
            product, lambda token: self._release(keys=keys, args=[token, order_id, saga_token])
        )

    async def _reserve_unlocked(self, order_id: str, product: str, qty: int) -> bool:
        """The broken variant: read, think, write. Two buyers can both see the last unit."""
        keys = self.keys(product)
        if await self.client.hexists(keys[2], order_id):
            return True
        stock = int(await self.client.get(keys[0]) or 0)
        await asyncio.sleep(0.05)  # long enough that concurrent buyers overlap under load
        if stock < qty:
            return False
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys[0], stock - qty)
        pipe.hset(keys[2], order_id, qty)
        await pipe.execute()
        return True


class Payments:
    """Each order's payment: charges and refunds, idempotent per key, fenced per order."""

    def __init__(self, client: Any, *, keyless: bool = False) -> None:
        self.keyless = keyless
        self._script = client.register_script(_script("order_payment"))

    async def _call(self, op: str, order_id: str, amount: int, key: str, token: int) -> int:
        key = "" if self.keyless else key
        n = int(await self._script(keys=[payment_key(order_id)], args=[token, key, op, amount]))
        if n == -1:
            raise LeaseLostError("a newer orchestrator has taken this order's payment over")
        return n

    async def charge(self, order_id: str, amount: int, key: str, token: int) -> int:
        return await self._call("charge", order_id, amount, key, token)

    async def refund(self, order_id: str, amount: int, key: str, token: int) -> int:
        return await self._call("refund", order_id, amount, key, token)


class OrderSaga:
    """The ``place-order`` saga over the shop's stores; ``saga`` is its definition."""

    def __init__(self, client: Any, db: ShopDb, *, broken: str | None = None) -> None:
        self.client = client
        self.db = db
        self.inventory = Inventory(client, unlocked=broken == "oversell")
        self.payments = Payments(client, keyless=broken == "saga-no-keys")
        self.saga = (
            Saga(SAGA_NAME)
            .add("reserve", self.reserve, compensation=self.release)
            .add("charge", self.charge, compensation=self.refund)
            .add("confirm", self.confirm)
        )

    async def _record(self, ctx: StepContext, kind: str, after: str | None = None) -> None:
        try:
            await self.db.call(lambda db: db.record(ctx.data, kind, ctx.token, after=after))
        except StaleTokenError as exc:
            raise LeaseLostError(str(exc), token=ctx.token) from exc

    async def reserve(self, ctx: StepContext) -> dict[str, Any]:
        order = ctx.data
        if not await self.inventory.reserve(
            order["order_id"], order["product"], order["qty"], ctx.token
        ):
            raise StepFailed("out of stock")
        await self._record(ctx, "reserved")
        return {"reserved": order["qty"]}

    async def release(self, ctx: StepContext) -> dict[str, Any]:
        order = ctx.data
        released = await self.inventory.release(order["order_id"], order["product"], ctx.token)
        await self._record(ctx, "released", after="reserved")
        return {"released": released}

    async def charge(self, ctx: StepContext) -> dict[str, Any]:
        order = ctx.data
        if order.get("card") == DECLINED:
            raise StepFailed("card declined")
        charges = await self.payments.charge(
            order["order_id"], order["amount"], ctx.idempotency_key, ctx.token
        )
        await self._record(ctx, "charged")
        return {"charge": charges}

    async def refund(self, ctx: StepContext) -> dict[str, Any]:
        order = ctx.data
        refunds = await self.payments.refund(
            order["order_id"], order["amount"], ctx.idempotency_key, ctx.token
        )
        await self._record(ctx, "refunded", after="charged")
        return {"refunds": refunds}

    async def confirm(self, ctx: StepContext) -> dict[str, Any]:
        order = ctx.data
        if order.get("ship_to") in NO_CARRIER:
            raise StepFailed(f"no carrier ships to {order['ship_to']}")
        await self._record(ctx, "confirmed")
        await self.client.hset(ORDERS_LEDGER, order["order_id"], order["product"])
        return {"confirmed": True}
