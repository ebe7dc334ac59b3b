"""A shop saga whose steps call a real HTTP service behind idemkit's middleware.

``app`` is the service (run by uvicorn in the fault test): every handler counts its
executions in Redis (``svc:<operation>``), so the test sees whether a step ran twice.
``order_saga(base_url)`` builds the saga: reserve stock, charge, confirm; the steps pass
``ctx.headers`` (the step's idempotency key) with every call.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from idemkit.middleware import IdempotencyMiddleware
from idemkit.patterns import Saga, StepContext, StepFailed

REDIS_URL = os.environ.get("IDEMKIT_SHOP_REDIS", "redis://127.0.0.1:1/0")
store = aioredis.Redis.from_url(REDIS_URL)


async def operation(request: Request) -> JSONResponse:
    name = request.path_params["op"]
    order = (await request.json())["order"]
    count = await store.incr(f"svc:{name}")
    await store.hincrby(f"svc:{name}:orders", order, 1)
    if name == "confirm" and (await request.json()).get("fail_confirm"):
        return JSONResponse({"error": "cannot confirm"}, status_code=409)
    return JSONResponse({"op": name, "order": order, "n": count}, status_code=201)


app = Starlette(
    routes=[Route("/{op}", operation, methods=["POST"])],
    middleware=[Middleware(IdempotencyMiddleware, store=store)],
)


def order_saga(base_url: str) -> Saga:
    def call(op: str, definitive: bool = False) -> Any:
        async def step(ctx: StepContext) -> Any:
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
                response = await http.post(f"/{op}", json=ctx.data, headers=ctx.headers)
            if definitive and response.status_code == 409:
                raise StepFailed(response.json()["error"])
            response.raise_for_status()
            return response.json()

        return step

    return (
        Saga("shop-order")
        .add("reserve", call("reserve"), compensation=call("release"))
        .add("charge", call("charge"), compensation=call("refund"))
        .add("confirm", call("confirm", definitive=True))
    )
