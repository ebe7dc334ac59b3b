"""Every code block of the README's integrations section runs, through its framework, against the
test session's redis-server; the extras table matches pyproject.toml."""

from __future__ import annotations

import re
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client, override_settings
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from tests.readme import block

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("fastapi", "django", "litestar", "observability")
KEY = {"Idempotency-Key": "readme-1"}


def run(name: str, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> dict[str, Any]:
    """Run README block ``name`` as a module of its own (frameworks resolve annotations there)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    module = types.ModuleType(f"readme_integrations_{name}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(block(name), f"README.md:{name}", "exec"), module.__dict__)
    return module.__dict__


async def test_fastapi_example(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    ns = run("fastapi", monkeypatch, redis_url)
    transport = httpx.ASGITransport(app=ns["app"])
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
        first = await http.post("/orders", json={"sku": "tea"}, headers=KEY)
        again = await http.post("/orders", json={"sku": "tea"}, headers=KEY)
        missing = await http.post("/orders", json={"sku": "tea"})
        schema = (await http.get("/openapi.json")).json()
    assert first.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert missing.status_code == 400
    parameters = schema["paths"]["/orders"]["post"]["parameters"]
    assert parameters[0]["name"] == "Idempotency-Key" and parameters[0]["required"] is True
    await ns["idempotency"].exchange.engine.store.client.aclose()


def test_django_example(monkeypatch: pytest.MonkeyPatch, redis_url: str, database: None) -> None:
    ns = run("django", monkeypatch, redis_url)
    from tests.integrations.django_site import views

    views.CALLS.clear()
    with override_settings(MIDDLEWARE=ns["MIDDLEWARE"], IDEMKIT=ns["IDEMKIT"]):
        client = Client()
        first = client.post("/pay", b"{}", content_type="application/json", headers=KEY)
        again = client.post("/pay", b"{}", content_type="application/json", headers=KEY)
    assert first.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert views.CALLS["pay"] == 1


def test_litestar_example(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    ns = run("litestar", monkeypatch, redis_url)
    plugin = ns["app"].plugins.get(ns["IdempotencyPlugin"])
    with TestClient(ns["app"]) as http:
        first = http.post("/orders", json={"sku": "tea"}, headers=KEY)
        again = http.post("/orders", json={"sku": "tea"}, headers=KEY)
        missing = http.post("/orders", json={"sku": "tea"})
        http.blocking_portal.call(plugin.exchange.engine.store.client.aclose)
    assert first.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert missing.status_code == 400


async def test_observability_example(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    import logging

    ns = run("observability", monkeypatch, redis_url)
    try:
        async with ns["lock"] as token:
            assert token > 0
        before = REGISTRY.get_sample_value(
            "idemkit_lock_hold_seconds_count", {"kind": "lock", "outcome": "released"}
        )
        assert before is not None and before >= 1
    finally:
        logging.getLogger("idemkit").removeHandler(ns["handler"])
        await ns["redis"].aclose()


def test_the_extras_table_matches_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    install = (ROOT / "README.md").read_text().split("\n## Install", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (`[^|]+`) \|", install, re.M)
    named = {name for row in rows for name in re.findall(r"`([a-z]+)`", row)}
    assert named == set(extras)
