"""``python -m bench [NAME ...]``: run the named benchmarks (default: all of them)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

_SKIP = {"report", "__main__"}


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    available = sorted(
        m.name
        for m in pkgutil.iter_modules([str(here)])
        if m.name not in _SKIP and not m.name.startswith("_")
    )
    names = argv or available
    unknown = set(names) - set(available)
    if unknown:
        print(f"unknown benchmark(s) {sorted(unknown)}; available: {available}", file=sys.stderr)
        return 2
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        print(f"== bench.{name}", flush=True)
        module.main([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
