"""One tiny shop whose handlers count their executions, built four ways for the HTTP tests:

* ``middleware``: Starlette endpoints behind ``IdempotencyMiddleware``;
* ``starlette``: the same endpoints, each decorated with ``@idempotent``;
* ``fastapi``: FastAPI path operations in FastAPI's idiom (returned data, an injected
  ``Response`` for status, headers and cookies), decorated with ``@idempotent``;
* ``litestar``: Litestar route handlers in Litestar's idiom, decorated with ``@idempotent``.

Every mode answers the same requests with the same statuses, headers and bodies, so the
behaviour tests run unchanged against each (the middleware and the decorator share one
capture and replay path, and the tests keep it that way).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi import HTTPException as FastAPIHTTPException
from fastapi import Request as FastAPIRequest
from fastapi import Response as FastAPIResponse
from litestar import Litestar, post, route
from litestar import Request as LitestarRequest
from litestar import Response as LitestarResponse
from litestar.datastructures import Cookie
from litestar.exceptions import HTTPException as LitestarHTTPException
from litestar.response import Stream
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from idemkit import fencing_token, idempotent
from idemkit.middleware import IdempotencyMiddleware

MODES = ("middleware", "starlette", "fastapi", "litestar")
DECORATOR_MODES = MODES[1:]
# Options only the middleware understands (the decorator covers one handler).
_MIDDLEWARE_ONLY = ("require_key", "exempt_paths")


class Shop:
    def __init__(self, mode: str = "middleware") -> None:
        if mode not in MODES:
            raise ValueError(mode)
        self.mode = mode
        self.calls: Counter[str] = Counter()
        self.bodies: Counter[bytes] = Counter()  # executions of /payments per request body
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def _pay(self, body: bytes) -> int:
        self.calls["pay"] += 1
        self.bodies[body] += 1
        n = self.calls["pay"]
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        return n

    def app(self, **options: Any) -> Any:
        if self.mode == "middleware":
            return self._starlette(decorate=None, middleware_options=options)
        require = options.pop("require_key", False)
        if require not in (True, False):
            raise ValueError("path globs are a middleware option")
        for name in _MIDDLEWARE_ONLY:
            options.pop(name, None)

        framework = "fastapi" if self.mode == "fastapi" else None

        def decorate(fn: Any) -> Any:
            return idempotent(require_key=require, framework=framework, **options)(fn)

        if self.mode == "starlette":
            return self._starlette(decorate=decorate, middleware_options=None)
        if self.mode == "fastapi":
            return self._fastapi(decorate)
        return self._litestar(decorate)

    # -- Starlette (middleware, or decorated endpoints) -----------------------------------

    def _starlette(self, decorate: Any, middleware_options: dict[str, Any] | None) -> Any:
        shop = self

        async def pay(request: Request) -> Response:
            body = await request.body()
            n = await shop._pay(body)
            response = JSONResponse({"charge": n, "echo": body.decode()}, status_code=201)
            response.headers["location"] = f"/payments/{n}"
            response.set_cookie("session", f"s{n}")
            return response

        async def status(request: Request) -> Response:
            shop.calls["status"] += 1
            code = int(request.path_params["code"])
            return JSONResponse({"status": code, "n": shop.calls["status"]}, status_code=code)

        async def boom(request: Request) -> Response:
            shop.calls["boom"] += 1
            raise RuntimeError("handler crashed")

        async def conflict(request: Request) -> Response:
            shop.calls["conflict"] += 1
            raise HTTPException(409, detail=f"conflict {shop.calls['conflict']}")

        async def big(request: Request) -> Response:
            shop.calls["big"] += 1
            return Response(b"x" * 5000, status_code=201, media_type="application/octet-stream")

        async def stream(request: Request) -> Response:
            shop.calls["stream"] += 1

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield f"chunk{i};".encode()

            return StreamingResponse(chunks(), media_type="text/plain")

        async def read(request: Request) -> Response:
            shop.calls["read"] += 1
            return JSONResponse({"n": shop.calls["read"]})

        async def token(request: Request) -> Response:
            shop.calls["token"] += 1
            return JSONResponse({"token": fencing_token(request)})

        async def nothing(request: Request) -> Response:
            shop.calls["nothing"] += 1
            return Response(status_code=204)

        handlers = [pay, status, boom, conflict, big, stream, read, token, nothing]
        if decorate is not None:
            handlers = [decorate(h) for h in handlers]
        pay, status, boom, conflict, big, stream, read, token, nothing = handlers
        routes = [
            Route("/payments", pay, methods=["POST", "PATCH", "GET"]),
            Route("/status/{code:int}", status, methods=["POST"]),
            Route("/boom", boom, methods=["POST"]),
            Route("/conflict", conflict, methods=["POST"]),
            Route("/big", big, methods=["POST"]),
            Route("/stream", stream, methods=["POST"]),
            Route("/read", read, methods=["GET", "POST"]),
            Route("/token", token, methods=["POST", "GET"]),
            Route("/nothing", nothing, methods=["POST"]),
        ]
        middleware = []
        if middleware_options is not None:
            middleware = [Middleware(IdempotencyMiddleware, **middleware_options)]
        return Starlette(routes=routes, middleware=middleware)

    # -- FastAPI ----------------------------------------------------------------------------

    def _fastapi(self, decorate: Any) -> Any:
        shop = self
        app = FastAPI()

        @app.api_route("/payments", methods=["POST", "PATCH", "GET"])
        @decorate
        async def pay(request: FastAPIRequest, response: FastAPIResponse) -> dict[str, Any]:
            body = await request.body()
            n = await shop._pay(body)
            response.status_code = 201
            response.headers["location"] = f"/payments/{n}"
            response.set_cookie("session", f"s{n}")
            return {"charge": n, "echo": body.decode()}

        @app.post("/status/{code}")
        @decorate
        async def status(code: int, response: FastAPIResponse) -> dict[str, int]:
            shop.calls["status"] += 1
            response.status_code = code
            return {"status": code, "n": shop.calls["status"]}

        @app.post("/boom")
        @decorate
        async def boom() -> None:
            shop.calls["boom"] += 1
            raise RuntimeError("handler crashed")

        @app.post("/conflict")
        @decorate
        async def conflict() -> None:
            shop.calls["conflict"] += 1
            raise FastAPIHTTPException(409, detail=f"conflict {shop.calls['conflict']}")

        @app.post("/big")
        @decorate
        async def big() -> FastAPIResponse:
            shop.calls["big"] += 1
            return FastAPIResponse(
                b"x" * 5000, status_code=201, media_type="application/octet-stream"
            )

        @app.post("/stream")
        @decorate
        async def stream() -> StreamingResponse:
            shop.calls["stream"] += 1

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield f"chunk{i};".encode()

            return StreamingResponse(chunks(), media_type="text/plain")

        @app.api_route("/read", methods=["GET", "POST"])
        @decorate
        async def read() -> dict[str, int]:
            shop.calls["read"] += 1
            return {"n": shop.calls["read"]}

        @app.api_route("/token", methods=["POST", "GET"])
        @decorate
        async def token(request: FastAPIRequest) -> dict[str, int | None]:
            shop.calls["token"] += 1
            return {"token": fencing_token(request)}

        @app.post("/nothing", status_code=204)
        @decorate
        async def nothing() -> None:
            shop.calls["nothing"] += 1

        return app

    # -- Litestar ---------------------------------------------------------------------------

    def _litestar(self, decorate: Any) -> Any:
        shop = self

        @decorate
        @route("/payments", http_method=["POST", "PATCH", "GET"])
        async def pay(request: LitestarRequest[Any, Any, Any]) -> LitestarResponse[dict[str, Any]]:
            body = await request.body()
            n = await shop._pay(body)
            return LitestarResponse(
                {"charge": n, "echo": body.decode()},
                status_code=201,
                headers={"location": f"/payments/{n}"},
                cookies=[Cookie(key="session", value=f"s{n}")],
            )

        @decorate
        @post("/status/{code:int}")
        async def status(
            request: LitestarRequest[Any, Any, Any],
        ) -> LitestarResponse[dict[str, int]]:
            code = int(request.path_params["code"])
            shop.calls["status"] += 1
            return LitestarResponse({"status": code, "n": shop.calls["status"]}, status_code=code)

        @decorate
        @post("/boom")
        async def boom() -> None:
            shop.calls["boom"] += 1
            raise RuntimeError("handler crashed")

        @decorate
        @post("/conflict")
        async def conflict() -> None:
            shop.calls["conflict"] += 1
            raise LitestarHTTPException(
                status_code=409, detail=f"conflict {shop.calls['conflict']}"
            )

        @decorate
        @post("/big", status_code=201, media_type="application/octet-stream")
        async def big() -> bytes:
            shop.calls["big"] += 1
            return b"x" * 5000

        @decorate
        @post("/stream", media_type="text/plain")
        async def stream() -> Stream:
            shop.calls["stream"] += 1

            async def chunks() -> AsyncIterator[bytes]:
                for i in range(3):
                    yield f"chunk{i};".encode()

            return Stream(chunks(), status_code=200)

        @decorate
        @route("/read", http_method=["GET", "POST"], status_code=200)
        async def read() -> dict[str, int]:
            shop.calls["read"] += 1
            return {"n": shop.calls["read"]}

        @decorate
        @route("/token", http_method=["POST", "GET"], status_code=200)
        async def token(request: LitestarRequest[Any, Any, Any]) -> dict[str, int | None]:
            shop.calls["token"] += 1
            return {"token": fencing_token(request)}

        @decorate
        @post("/nothing", status_code=204)
        async def nothing() -> None:
            shop.calls["nothing"] += 1

        return Litestar(
            route_handlers=[pay, status, boom, conflict, big, stream, read, token, nothing],
            debug=False,
            logging_config=None,
        )


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
