"""A small service that is not the shop, for the Locust kit's tests: money transfers.

``POST /transfers`` moves an amount between two accounts; ``PATCH /accounts/{name}`` renames
one and bumps its version. Both run under the idempotency middleware on ``REDIS_URL``.
Every answer is stamped with the time it was sent by a middleware *outside* the idempotency
middleware (``served_at``), a field that legitimately differs between a first answer and its
replay. ``TARGET_BROKEN=1`` removes the idempotency middleware. It has no ledger and no
check hook: the kit must judge it from the client side alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from idemkit import IdempotencyMiddleware

store = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:1/0"))


async def transfer(request: Request) -> Response:
    doc = await request.json()
    amount = int(doc["amount"])
    pipe = store.pipeline(transaction=True)
    pipe.incrby(f"target:balance:{doc['source']}", -amount)
    pipe.incrby(f"target:balance:{doc['destination']}", amount)
    source, _ = await pipe.execute()
    return JSONResponse(
        {"transfer": uuid.uuid4().hex, "amount": amount, "source_balance": int(source)},
        status_code=201,
    )


async def rename(request: Request) -> Response:
    name = request.path_params["name"]
    doc = await request.json()
    version = await store.incr(f"target:version:{name}")
    return JSONResponse({"account": name, "nickname": doc["nickname"], "version": version})


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


class Stamp:
    """Adds ``served_at`` to every JSON object answer, replays included."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start: dict[str, Any] = {}

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body = message.get("body", b"")
            with contextlib.suppress(ValueError):
                body = json.dumps({**json.loads(body), "served_at": time.time()}).encode()
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", b"%d" % len(body))]})
            await send({"type": "http.response.body", "body": body})

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, stamped)


middleware = [Middleware(Stamp)]
if not os.environ.get("TARGET_BROKEN"):
    middleware.append(Middleware(IdempotencyMiddleware, store=store, require_key=True, lease=2.0))

app = Starlette(
    routes=[
        Route("/", health, methods=["GET"]),
        Route("/transfers", transfer, methods=["POST"]),
        Route("/accounts/{name}", rename, methods=["PATCH"]),
    ],
    middleware=middleware,
)
