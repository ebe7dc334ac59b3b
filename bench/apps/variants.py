"""The small app of the HTTP benchmark, bare and behind each idempotency middleware.

Run by ``bench/http.py`` in a uvicorn subprocess: ``python -m bench.apps.variants VARIANT PORT
REDIS_URL``. Every variant serves the same Starlette app:

- ``POST /orders`` reads the body and answers 201 with a small JSON document. It counts its
  own executions per ``Idempotency-Key`` in process, so duplicate executions of one key (the
  thing an idempotency layer exists to prevent) are visible to the benchmark.
- ``GET /stats`` returns those counts (GET is never covered by the middlewares);
  ``GET /stats?reset=1`` clears them.

This directory has no ``__init__.py`` on purpose: ``python -m bench`` runs every module of
the ``bench`` package it finds, and these are helpers, not benchmarks.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VARIANTS = ("bare", "idemkit", "asgi-idempotency-header", "fastapi-idempotency-key")


class Executions:
    def __init__(self) -> None:
        self.per_key: Counter[str] = Counter()
        self.total = 0

    def summary(self) -> dict[str, Any]:
        dup_keys = sum(1 for n in self.per_key.values() if n > 1)
        return {
            "executions": self.total,
            "keys": len(self.per_key),
            "keys_executed_more_than_once": dup_keys,
            "extra_executions": self.total - len(self.per_key),
            "max_per_key": max(self.per_key.values(), default=0),
        }


def base_app() -> tuple[Starlette, Executions]:
    executions = Executions()

    async def orders(request: Request) -> Response:
        body = await request.body()
        key = request.headers.get("idempotency-key", "")
        executions.total += 1
        executions.per_key[key] += 1
        return JSONResponse({"order": executions.total, "size": len(body)}, status_code=201)

    async def stats(request: Request) -> Response:
        summary = executions.summary()
        if request.query_params.get("reset"):
            executions.per_key.clear()
            executions.total = 0
        return JSONResponse(summary)

    routes = [Route("/orders", orders, methods=["POST"]), Route("/stats", stats)]
    return Starlette(routes=routes), executions


def build(variant: str, redis_url: str) -> Any:
    app, _ = base_app()
    if variant == "bare":
        return app
    if variant == "idemkit":
        import redis.asyncio as aioredis

        from idemkit.middleware import IdempotencyMiddleware

        return IdempotencyMiddleware(app, store=aioredis.Redis.from_url(redis_url))
    if variant == "asgi-idempotency-header":
        import redis.asyncio as aioredis
        from idempotency_header_middleware import IdempotencyHeaderMiddleware
        from idempotency_header_middleware.backends.redis import RedisBackend as AIHBackend

        return IdempotencyHeaderMiddleware(
            app, backend=AIHBackend(aioredis.Redis.from_url(redis_url))
        )
    if variant == "fastapi-idempotency-key":
        from fastapi_idempotency_key import IdempotencyMiddleware as FIKMiddleware
        from fastapi_idempotency_key import RedisBackend as FIKBackend

        return FIKMiddleware(app, backend=FIKBackend(redis_url=redis_url))
    raise SystemExit(f"unknown variant {variant!r}; known: {VARIANTS}")


def serve(variant: str, port: int, redis_url: str) -> None:
    import uvicorn

    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    uvicorn.run(
        build(variant, redis_url),
        host="127.0.0.1",
        port=port,
        workers=1,
        loop=loop,
        http=http,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
