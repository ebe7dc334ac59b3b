"""The client examples of the README run as written, against a live server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.integrations.scripted_server import scripted_server

ROOT = Path(__file__).resolve().parents[2]


def client_examples() -> list[str]:
    """The python blocks of the README's clients section (or of its draft in docs/readme)."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Retrying clients.*?(?=^## )", readme, re.S | re.M)
    text = match.group(0) if match else (ROOT / "docs/readme/clients.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("index", range(3))
def test_readme_client_example_runs(index: int) -> None:
    code = client_examples()[index]
    with scripted_server((201, {}, b'{"status": "created"}')) as srv:
        scope = {"SHOP_URL": srv.url}
        if "await " in code:
            body = "".join(f"    {line}\n" for line in code.splitlines())
            exec(f"async def example():\n{body}    return response\n", scope)
            scope["response"] = asyncio.run(scope["example"]())
        else:
            exec(code, scope)
    assert scope["response"].status_code == 201
    assert [s.path for s in srv.seen] == ["/orders"]
    assert "idempotency-key" in srv.seen[0].headers
