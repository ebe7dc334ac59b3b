"""The client examples of the README run as written, against a live server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integrations.scripted_server import scripted_server
from tests.readme import block

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["httpx-client", "requests-client", "circuit-breaker"])
def test_readme_client_example_runs(name: str) -> None:
    code = block(name)
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
