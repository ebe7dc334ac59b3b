"""A throwaway Sentinel group on loopback: one primary, its replicas and three sentinels.

Every process is the ``redis-server`` binary (a sentinel is ``redis-server <conf>
--sentinel``) on a free loopback port, in its own temporary directory. Failover helpers kill
the primary (:meth:`SentinelGroup.kill_primary`) and wait until the sentinels agree on a
promoted replica that answers as a primary (:meth:`SentinelGroup.wait_for_promotion`); a
killed server started again (:meth:`SentinelGroup.restart`) is turned into a replica of the
new primary by the sentinels. Every wait is bounded.

A failover takes about ``down_after_ms`` (the primary is subjectively down), the sentinels'
agreement and leader election (well under a second on loopback) and the promotion, which a
sentinel confirms by polling ``INFO`` once a second: 1.5 to 3 s with the defaults here. A
sentinel tries a second failover of the same service only after twice ``failover_timeout_ms``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel
import redis.sentinel

from idemkit.testing.redis_server import RedisServer, free_port, redis_binary

__all__ = ["SentinelGroup", "SentinelServer", "aclose_client", "close_client"]

DEFAULT_SERVICE = "idemkit"


class SentinelServer:
    """One ``redis-server --sentinel`` child process watching one service."""

    def __init__(
        self,
        primary_port: int,
        *,
        service: str = DEFAULT_SERVICE,
        quorum: int = 2,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="idemkit-sentinel-")
        self.config = os.path.join(self.directory, "sentinel.conf")
        # Sentinel rewrites this file as it learns the topology: it must be writable.
        with open(self.config, "w") as conf:
            conf.write(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f"dir {self.directory}\n"
                f"logfile {os.path.join(self.directory, 'sentinel.log')}\n"
                "loglevel warning\n"
                f"sentinel monitor {service} 127.0.0.1 {primary_port} {quorum}\n"
                f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
                f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {service} 1\n"
            )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, timeout: float = 10.0) -> SentinelServer:
        self.process = subprocess.Popen(
            [redis_binary(), self.config, "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-sentinel exited at start (port {self.port})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(self.address, timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-sentinel on port {self.port} did not answer within {timeout}s")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


class SentinelGroup:
    """``with SentinelGroup() as group:`` one primary, ``replicas`` replicas, ``sentinels``
    sentinels (quorum: a majority) watching the service ``group.service``.

    Clients: ``redis.sentinel.Sentinel(group.sentinel_addresses).master_for(group.service)``
    (or the ``redis.asyncio.sentinel`` twin).
    """

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        service: str = DEFAULT_SERVICE,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 3000,
        appendonly: bool = False,
    ) -> None:
        if replicas < 1:
            raise ValueError("a Sentinel group needs at least one replica to fail over to")
        if sentinels < 1:
            raise ValueError("a Sentinel group needs at least one sentinel")
        self.service = service
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        # Replicas sync at once (the default waits 5 s for more replicas to come).
        fast_sync = ["--repl-diskless-sync-delay", "0"]
        self.servers = [RedisServer(appendonly=appendonly, extra_args=fast_sync)]
        primary_port = self.servers[0].port
        self.servers += [
            RedisServer(
                appendonly=appendonly,
                extra_args=[*fast_sync, "--replicaof", "127.0.0.1", str(primary_port)],
            )
            for _ in range(replicas)
        ]
        self.sentinels = [
            SentinelServer(
                primary_port,
                service=service,
                quorum=sentinels // 2 + 1,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for _ in range(sentinels)
        ]

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.address for s in self.sentinels]

    def client(self, **kwargs: Any) -> redis.Redis:
        """A blocking client of the primary through the sentinels
        (``Sentinel(...).master_for(service)``); ``kwargs`` go to its connections. Close it
        with :func:`close_client`."""
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            self.sentinel_addresses, **_sentinel_kwargs(kwargs)
        )
        client: redis.Redis = sentinel.master_for(self.service, **kwargs)  # type: ignore[no-untyped-call]
        return client

    def async_client(self, **kwargs: Any) -> aioredis.Redis:
        """The ``redis.asyncio`` twin of :meth:`client`; close it with :func:`aclose_client`."""
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            self.sentinel_addresses, **_sentinel_kwargs(kwargs)
        )
        client: aioredis.Redis = sentinel.master_for(self.service, **kwargs)
        return client

    def flush(self) -> None:
        """``FLUSHALL`` on the primary (replicas follow)."""
        client = redis.Redis(port=self.primary().port, socket_timeout=2)
        try:
            client.flushall()
        finally:
            client.close()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        for server in self.servers:
            server.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_ready(timeout)
        return self

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()

    def __enter__(self) -> SentinelGroup:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what the group looks like ---------------------------------------------------------------

    def _server(self, port: int) -> RedisServer:
        for server in self.servers:
            if server.port == port:
                return server
        raise LookupError(f"no server of this group listens on {port}")

    def _sentinel_view(self) -> list[int | None]:
        """The primary's port as each live sentinel reports it (None: no answer)."""
        views: list[int | None] = []
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=1, socket_connect_timeout=1)
            try:
                reply = client.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
                )
                views.append(int(reply[1]) if reply else None)
            except (redis.RedisError, OSError):
                views.append(None)
            finally:
                client.close()
        return views

    def primary(self) -> RedisServer:
        """The server a majority of sentinels names as primary."""
        views = [v for v in self._sentinel_view() if v is not None]
        for port in set(views):
            if views.count(port) > len(self.sentinels) // 2:
                return self._server(port)
        raise RuntimeError(f"the sentinels do not agree on a primary: {views}")

    def _info(self, server: RedisServer) -> dict[str, object]:
        client = redis.Redis(port=server.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return dict(client.info("replication"))
        finally:
            client.close()

    def _sentinels_know(self, replicas: int) -> bool:
        """Every sentinel sees the primary's replicas and the other sentinels."""
        for sentinel in self.sentinels:
            client = redis.Redis(
                port=sentinel.port,
                socket_timeout=1,
                socket_connect_timeout=1,
                decode_responses=True,
            )
            try:
                state = client.execute_command(  # type: ignore[no-untyped-call]
                    "SENTINEL", "MASTER", self.service
                )
            finally:
                client.close()
            if isinstance(state, list):
                state = dict(zip(state[::2], state[1::2], strict=False))
            if int(state.get("num-slaves", 0)) < replicas:
                return False
            if int(state.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                return False
        return True

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the primary has every live replica linked and every sentinel knows them
        and the other sentinels (so a failover can reach its quorum)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, redis.RedisError, OSError, LookupError):
                primary = self.primary()
                info = self._info(primary)
                live = [s for s in self.servers if s is not primary and _alive(s)]
                linked = all(self._info(s).get("master_link_status") == "up" for s in live)
                if (
                    info.get("role") == "master"
                    and int(str(info.get("connected_slaves", 0))) >= len(live)
                    and linked
                    and self._sentinels_know(len(live))
                ):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the Sentinel group was not ready within {timeout}s")

    # -- faults ----------------------------------------------------------------------------------

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary; returns it (for :meth:`restart`)."""
        primary = self.primary()
        primary.kill()
        return primary

    def wait_for_promotion(self, killed: RedisServer, timeout: float = 20.0) -> RedisServer:
        """Wait until a majority of sentinels names another server as primary and that server
        answers ``role:master``; the new primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError, redis.RedisError, OSError, LookupError):
                primary = self.primary()
                if primary is not killed and self._info(primary).get("role") == "master":
                    return primary
            time.sleep(0.05)
        raise RuntimeError(f"no replica was promoted within {timeout}s")

    def restart(self, server: RedisServer, timeout: float = 30.0) -> None:
        """Start a killed server again as a replica of the current primary (the sentinels
        would convert it too, but only after seconds of seeing two primaries). Waits until its
        replication link is up and the sentinels count it."""
        args = server.extra_args
        if "--replicaof" in args:
            at = args.index("--replicaof")
            del args[at : at + 3]
        primary = self.primary()
        if primary is not server:
            args += ["--replicaof", "127.0.0.1", str(primary.port)]
        server.process = None
        server.start()
        self.wait_ready(timeout)


def _alive(server: RedisServer) -> bool:
    return server.process is not None and server.process.poll() is None


def _sentinel_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    # Questions to the sentinels are short: never wait long for a dead one.
    return {"sentinel_kwargs": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}}


def close_client(client: redis.Redis) -> None:
    """Close a client from :meth:`SentinelGroup.client` and its connections to the sentinels."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    client.close()
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


async def aclose_client(client: aioredis.Redis) -> None:
    """Close a client from :meth:`SentinelGroup.async_client` and its sentinel connections."""
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    await client.aclose()
    if manager is not None:
        await manager.aclose()
