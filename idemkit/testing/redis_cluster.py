"""A throwaway Redis Cluster on loopback, formed from ``redis-server`` processes."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator

from idemkit.testing.redis_server import RedisServer, free_port

__all__ = ["RedisCluster"]


class RedisCluster:
    """A throwaway Redis Cluster of ``masters`` nodes (no replicas) on loopback."""

    def __init__(self, masters: int = 3) -> None:
        if masters < 3:
            raise ValueError("Redis Cluster needs at least 3 masters")
        # The cluster bus listens on port + 10000, so node ports must stay at or below 55535.
        self.nodes = [
            RedisServer(
                port=free_port(below=55536),
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            for _ in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 20.0) -> RedisCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is required to form a cluster (package redis-tools)")
        addrs = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addrs, "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = subprocess.run(
                [cli, "-p", str(self.nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            if "cluster_state:ok" in info:
                return self
            time.sleep(0.1)
        raise RuntimeError("Redis Cluster did not reach cluster_state:ok")

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __iter__(self) -> Iterator[RedisServer]:
        return iter(self.nodes)

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
