"""Every code block of docs/readme/patterns.md runs, against throwaway servers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.patterns._proc import ROOT

DOC = Path(ROOT) / "docs" / "readme" / "patterns.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_section_has_its_examples() -> None:
    assert len(BLOCKS) == 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(
    index: int, redis_url: str, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    monkeypatch.setenv("SHOP_DB", str(tmp_path / "shop.db"))
    monkeypatch.chdir(tmp_path)
    if index == 2:  # the consumer reads what the outbox example published
        exec(compile(BLOCKS[0], f"{DOC}:block0", "exec"), {"__name__": "readme"})
    namespace = {"__name__": "readme"}
    exec(compile(BLOCKS[index], f"{DOC}:block{index}", "exec"), namespace)
    if index == 2:
        assert namespace["r"].hget("sales", "paid") == b"1"  # type: ignore[attr-defined]
    for name in ("r", "db"):
        resource = namespace.get(name)
        if resource is not None and hasattr(resource, "close"):
            resource.close()
    assert os.environ["REDIS_URL"] == redis_url
