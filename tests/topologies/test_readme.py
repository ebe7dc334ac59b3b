"""The example of docs/readme/cluster.md runs as written, on the session Cluster and Sentinel
group (their addresses in the environment variables it reads)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis

from idemkit.testing import RedisCluster, SentinelGroup

DOC = Path(__file__).resolve().parents[2] / "docs" / "readme" / "cluster.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_section_has_its_example() -> None:
    assert len(BLOCKS) == 1


def test_the_example_runs(
    redis_cluster: RedisCluster,
    sentinel_group: SentinelGroup,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    redis_cluster.flush()
    sentinel_group.flush()
    monkeypatch.setenv("REDIS_CLUSTER_URL", redis_cluster.url)
    monkeypatch.setenv(
        "SENTINELS", ",".join(f"{h}:{p}" for h, p in sentinel_group.sentinel_addresses)
    )
    monkeypatch.setenv("SENTINEL_SERVICE", sentinel_group.service)
    exec(compile(BLOCKS[0], f"{DOC}:block0", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == "201 true\n"
    check = redis.Redis(port=sentinel_group.primary().port)
    try:
        assert check.hget("idemkit:fence:{invoice:42}", "total") == b"100"
    finally:
        check.close()
