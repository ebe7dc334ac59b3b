"""Real HTTP servers in a thread of the test process, on free loopback ports: uvicorn for
ASGI apps, waitress for WSGI apps. Each stops (and joins) when its ``with`` block ends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
import waitress

from idemkit.testing import free_port


def _wait(ready: Callable[[], bool], thread: threading.Thread, what: str) -> None:
    deadline = time.monotonic() + 10
    while not ready():
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.01)


@contextmanager
def asgi_server(
    app: Any, on_shutdown: Callable[[], Awaitable[None]] | None = None
) -> Iterator[str]:
    """``app`` on uvicorn; yields its base URL. ``on_shutdown`` runs on the server's loop
    before it stops (to close clients bound to that loop)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    _wait(lambda: server.started, thread, "uvicorn")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if on_shutdown is not None and loops:
            asyncio.run_coroutine_threadsafe(on_shutdown(), loops[0]).result(10)
        server.should_exit = True
        thread.join(15)


@contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """``app`` on waitress (4 threads); yields its base URL."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        thread.join(15)
