"""CRDT test fixtures: three independent Redis regions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from idemkit.testing import RedisServer


@pytest.fixture
def three_regions() -> Iterator[list[RedisServer]]:
    """Three independent redis-server processes (AOF on, so a restart keeps data)."""
    servers = [RedisServer(appendonly=True) for _ in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.close()
