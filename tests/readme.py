"""The README's code blocks, for the tests that run them.

Every ```python block of README.md is preceded by a marker naming it,
``<!-- readme-test: NAME -->``; :func:`block` returns a block by name and :func:`run` executes
one as a module of its own (frameworks resolve annotations in the module that defines them),
with top-level ``await`` allowed, the way a reader would paste it into ``python -m asyncio``.
``tests/test_readme.py`` checks that every block has a marker and that a test runs it.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["README", "Block", "block", "blocks", "close_clients", "run"]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_BLOCK = re.compile(r"(?:<!-- readme-test: ([\w-]+) -->\n)?```python\n(.*?)```", re.S)


@dataclass(frozen=True)
class Block:
    name: str | None
    code: str
    line: int


def blocks(path: Path = README) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in _BLOCK.finditer(text)
    ]


def block(name: str) -> str:
    found = [b for b in blocks() if b.name == name]
    if len(found) != 1:
        raise LookupError(f"README.md has {len(found)} blocks named {name!r}")
    return found[0].code


async def run(name: str, **names: Any) -> dict[str, Any]:
    """Execute block ``name`` in a fresh module (``names`` predefined); its namespace."""
    module = types.ModuleType(f"readme_{name.replace('-', '_')}")
    module.__dict__.update(names)
    sys.modules[module.__name__] = module
    code = compile(block(name), f"README.md:{name}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, module.__dict__)
    if inspect.isawaitable(result):
        await result
    return module.__dict__


async def close_clients(namespace: dict[str, Any]) -> None:
    """Close the Redis clients a block created (tests run warnings-as-errors)."""
    import redis
    import redis.asyncio as aioredis

    for value in list(namespace.values()):
        if isinstance(value, aioredis.Redis):
            await value.aclose()
        elif isinstance(value, redis.Redis):
            value.close()
