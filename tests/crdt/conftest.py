"""CRDT test fixtures: three independent Redis regions, and ways to make them lose state."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from idemkit.testing import RedisServer

_AOF_DIR = "appendonlydir"


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


def restart_empty(server: RedisServer) -> None:
    """The region comes back with nothing: its data files are gone."""
    server.stop()
    shutil.rmtree(os.path.join(server.directory, _AOF_DIR), ignore_errors=True)
    for name in ("dump.rdb",):
        path = os.path.join(server.directory, name)
        if os.path.exists(path):
            os.remove(path)
    server.process = None
    server.start()


def take_snapshot(server: RedisServer) -> str:
    """Copy the region's AOF aside (stopped for a consistent copy, then started again)."""
    server.stop()
    copy = tempfile.mkdtemp(prefix="idemkit-snapshot-")
    shutil.copytree(os.path.join(server.directory, _AOF_DIR), os.path.join(copy, _AOF_DIR))
    server.process = None
    server.start()
    return copy


def restore_snapshot(server: RedisServer, snapshot: str) -> None:
    """The region comes back from an older copy of its data (the copy is used up)."""
    server.stop()
    target = os.path.join(server.directory, _AOF_DIR)
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(os.path.join(snapshot, _AOF_DIR), target)
    shutil.rmtree(snapshot, ignore_errors=True)
    server.process = None
    server.start()
