"""A TCP proxy on loopback that delays, drops and injects: the network a retry is for.

:class:`LossyProxy` forwards every connection to one upstream address and, per *exchange*
(the bytes a client sends while it is not waiting for an answer, and the answer to them),
applies one fate:

* ``"pass"``: forwarded both ways, each direction delayed by ``request_delay`` /
  ``reply_delay`` seconds (latency, not throttling: pipelined bytes keep their order);
* ``"drop"``: the request is forwarded and the server does its work; when its answer starts
  coming back, the client's connection is closed and the answer is read to its end and
  thrown away, so the server sees a normal exchange and the client sees a lost response;
* ``"inject"``: nothing is forwarded; the client gets ``inject_response`` (by default an
  HTTP ``503`` with ``Connection: close``) and the connection is closed.

Fates are drawn at random with ``drop_rate`` and ``inject_rate`` (seeded), or chosen by a
``decide(first_bytes) -> fate`` callable, so a test can spare some requests (a health check).
The proxy runs its own event loop in a daemon thread, so sync and async clients can use it
alike; settings may be changed while it runs. It knows nothing about the protocol besides
"request, then answer", which fits HTTP/1.1 and RESP (Redis) clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal

__all__ = ["HTTP_503", "Fate", "LossyProxy", "ProxyStats"]

Fate = Literal["pass", "drop", "inject"]

HTTP_503: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\n"
    b"Retry-After: 0\r\n"
    b"Content-Length: 20\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"proxy: injected 503\n"
)

_CHUNK: Final = 65536
# A dropped answer is over once the server has sent nothing for this long.
_QUIET: Final = 0.5


@dataclass
class ProxyStats:
    """What the proxy did so far (read from any thread; updated by the proxy's loop)."""

    connections: int = 0
    exchanges: int = 0
    dropped: int = 0
    injected: int = 0


class LossyProxy:
    """``with LossyProxy(upstream_port, drop_rate=0.2) as proxy:`` then connect to
    ``proxy.port`` on 127.0.0.1 instead of the upstream."""

    def __init__(
        self,
        upstream: int | tuple[str, int],
        *,
        reply_delay: float = 0.0,
        request_delay: float = 0.0,
        drop_rate: float = 0.0,
        inject_rate: float = 0.0,
        inject_response: bytes = HTTP_503,
        decide: Callable[[bytes], Fate] | None = None,
        drain_timeout: float = 5.0,
        seed: int | None = None,
    ) -> None:
        self.upstream = ("127.0.0.1", upstream) if isinstance(upstream, int) else upstream
        self.reply_delay = reply_delay
        self.request_delay = request_delay
        self.drop_rate = drop_rate
        self.inject_rate = inject_rate
        self.inject_response = inject_response
        self.decide = decide
        # How long a dropped answer is still read from the server, so it can finish sending.
        self.drain_timeout = drain_timeout
        self.stats = ProxyStats()
        self._random = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped: asyncio.Event | None = None
        self.port = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> LossyProxy:
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="idemkit-lossy-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            self.stop()
            raise RuntimeError(f"lossy proxy did not start: {failure[:1]}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and self._stopped is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(self._stopped.set)
        if thread is not None:
            thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> LossyProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        ready.set()
        try:
            await self._stopped.wait()
        finally:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    # -- one connection -----------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _draw(self, first: bytes) -> Fate:
        if self.decide is not None:
            return self.decide(first)
        roll = self._random.random()
        if roll < self.drop_rate:
            return "drop"
        if roll < self.drop_rate + self.inject_rate:
            return "inject"
        return "pass"

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        writers = [cwriter]
        try:
            ureader, uwriter = await asyncio.open_connection(*self.upstream)
            writers.append(uwriter)
            await _Link(self, creader, cwriter, ureader, uwriter).run()
        except OSError:
            pass
        finally:
            # Close every writer before awaiting any: a cancellation (stop) must skip none.
            for writer in writers:
                writer.close()
            for writer in writers:
                with contextlib.suppress(Exception):
                    await writer.wait_closed()


class _Link:
    """The two directions of one proxied connection and the fate of its current exchange."""

    def __init__(
        self,
        proxy: LossyProxy,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.creader, self.cwriter = creader, cwriter
        self.ureader, self.uwriter = ureader, uwriter
        self.awaiting = False  # a request went up and no byte of its answer came back yet
        self.fate: Fate = "pass"
        self.dropping = False

    async def run(self) -> None:
        up: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        down: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        from_client = asyncio.create_task(self._from_client(up))
        to_server = asyncio.create_task(self._write(up, self.uwriter, eof=False))
        from_server = asyncio.create_task(self._from_server(down))
        to_client = asyncio.create_task(self._write(down, self.cwriter, eof=True))
        tasks = (from_client, to_server, from_server, to_client)
        try:
            await asyncio.wait((from_client, to_client), return_when=asyncio.FIRST_COMPLETED)
            if not to_client.done() and (self.awaiting or self.dropping):
                # The client is gone in the middle of an exchange: let the server finish its
                # work and its answer (read into the void) before closing its connection.
                await asyncio.wait((to_server,), timeout=self.proxy.drain_timeout)
                await asyncio.wait((from_server,), timeout=self.proxy.drain_timeout)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _from_client(self, up: asyncio.Queue[tuple[float, bytes]]) -> None:
        try:
            while data := await self.creader.read(_CHUNK):
                if not self.awaiting:
                    self.fate = self.proxy._draw(data)
                    self.proxy.stats.exchanges += 1
                    if self.fate == "inject":
                        self.proxy.stats.injected += 1
                        await self._inject()
                        return
                    self.awaiting = True
                await up.put((time.monotonic() + self.proxy.request_delay, data))
        except OSError:
            pass
        finally:
            up.put_nowait((0.0, b""))  # end of the request stream

    async def _inject(self) -> None:
        with contextlib.suppress(OSError):
            self.cwriter.write(self.proxy.inject_response)
            await self.cwriter.drain()
            self.cwriter.write_eof()
            # Read what the client still sends until it closes: closing a socket with unread
            # input sends a reset, which could destroy the answer before the client reads it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    while await self.creader.read(_CHUNK):
                        pass

    async def _from_server(self, down: asyncio.Queue[tuple[float, bytes]]) -> None:
        try:
            while data := await self.ureader.read(_CHUNK):
                if self.awaiting:
                    self.awaiting = False
                    if self.fate == "drop":
                        self.proxy.stats.dropped += 1
                        self.dropping = True
                        self.cwriter.transport.abort()
                        await self._drain_upstream()
                        return
                await down.put((time.monotonic() + self.proxy.reply_delay, data))
        except OSError:
            pass
        finally:
            down.put_nowait((0.0, b""))

    async def _drain_upstream(self) -> None:
        """Read a dropped answer to its end (the server goes quiet or closes), send it nowhere."""
        deadline = time.monotonic() + self.proxy.drain_timeout
        with contextlib.suppress(TimeoutError, OSError):
            while time.monotonic() < deadline:
                async with asyncio.timeout(min(_QUIET, deadline - time.monotonic())):
                    if not await self.ureader.read(_CHUNK):
                        return

    async def _write(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter, *, eof: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data = await queue.get()
                if not data:
                    # The server hanging up is passed on; the client hanging up is not, since
                    # a server may take a half-closed connection for a client that gave up.
                    if eof and not writer.transport.is_closing() and writer.can_write_eof():
                        writer.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if writer.transport.is_closing():
                    continue
                writer.write(data)
                await writer.drain()
