"""Every code block of the README's transaction-patterns section runs, against throwaway
servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.readme import block

NAMES = ["outbox", "relay", "consumer", "celery", "saga"]


@pytest.mark.parametrize("name", NAMES)
def test_readme_block_runs(
    name: str, redis_url: str, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("SHOP_DB", str(tmp_path / "shop.db"))
    monkeypatch.chdir(tmp_path)
    if name == "consumer":  # the consumer reads what the outbox example published
        exec(compile(block("outbox"), "README.md:outbox", "exec"), {"__name__": "readme"})
    namespace = {"__name__": "readme"}
    exec(compile(block(name), f"README.md:{name}", "exec"), namespace)
    if name == "consumer":
        assert namespace["r"].hget("sales", "paid") == b"1"  # type: ignore[attr-defined]
    for resource_name in ("r", "db"):
        resource = namespace.get(resource_name)
        if resource is not None and hasattr(resource, "close"):
            resource.close()
    assert os.environ["REDIS_URL"] == redis_url
