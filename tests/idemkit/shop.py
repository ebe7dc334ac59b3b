"""A tiny Starlette app whose handlers count their executions, for middleware tests."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from idemkit.middleware import IdempotencyMiddleware


class Shop:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def pay(self, request: Request) -> Response:
        body = await request.body()
        self.calls["pay"] += 1
        n = self.calls["pay"]
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        response = JSONResponse({"charge": n, "echo": body.decode()}, status_code=201)
        response.headers["location"] = f"/payments/{n}"
        response.set_cookie("session", f"s{n}")
        return response

    async def status(self, request: Request) -> Response:
        self.calls["status"] += 1
        code = int(request.path_params["code"])
        return JSONResponse({"status": code, "n": self.calls["status"]}, status_code=code)

    async def boom(self, request: Request) -> Response:
        self.calls["boom"] += 1
        raise RuntimeError("handler crashed")

    async def big(self, request: Request) -> Response:
        self.calls["big"] += 1
        return Response(b"x" * 5000, status_code=201, media_type="application/octet-stream")

    async def stream(self, request: Request) -> Response:
        self.calls["stream"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    async def read(self, request: Request) -> Response:
        self.calls["read"] += 1
        return JSONResponse({"n": self.calls["read"]})

    def app(self, **options: Any) -> Starlette:
        routes = [
            Route("/payments", self.pay, methods=["POST", "PATCH", "GET"]),
            Route("/status/{code:int}", self.status, methods=["POST"]),
            Route("/boom", self.boom, methods=["POST"]),
            Route("/big", self.big, methods=["POST"]),
            Route("/stream", self.stream, methods=["POST"]),
            Route("/read", self.read, methods=["GET", "POST"]),
        ]
        return Starlette(routes=routes, middleware=[Middleware(IdempotencyMiddleware, **options)])


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://shop.test")


def post_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """A minimal ASGI HTTP scope for driving an app directly (no client in between)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
