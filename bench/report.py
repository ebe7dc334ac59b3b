"""Write one benchmark's section of docs/BENCHMARKS.md without touching the others.

Each benchmark owns the text between ``<!-- begin:NAME -->`` and ``<!-- end:NAME -->``;
running one benchmark rewrites only its own section, so results of different runs coexist.
"""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

__all__ = ["BENCHMARKS_MD", "machine_summary", "write_section"]

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
_HEADER = """# Benchmarks

Every number here was produced by the command shown in its section, on the machine described
there. Ratios against a baseline measured in the same run matter; absolute numbers do not
travel between machines. Regenerate everything with `make bench`.
"""


def machine_summary() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    try:
        redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=5
        ).stdout.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        redis_version = "unknown"
    import os

    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"redis-server {redis_version}"
    )


def write_section(name: str, markdown: str, path: Path = BENCHMARKS_MD) -> None:
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else _HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = f"{text.rstrip()}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
