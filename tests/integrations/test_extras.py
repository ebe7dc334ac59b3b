"""An integration imported without its library says which extra to install."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("integrations.httpx_client", "httpx", "httpx"),
        ("integrations.requests_client", "requests", "requests"),
        ("integrations.prometheus", "prometheus_client", "prometheus"),
        ("integrations.fastapi", "fastapi", "fastapi"),
        ("integrations.django", "django", "django"),
        ("integrations.litestar", "litestar", "litestar"),
        ("integrations.otel", "opentelemetry", "otel"),
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    for name in [m for m in sys.modules if m.startswith(f"{library}.")]:
        monkeypatch.setitem(sys.modules, name, None)  # imported submodules fail too
    monkeypatch.setitem(sys.modules, library, None)  # "import <library>" now fails
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module(module)
    assert f"pip install 'idemkit[{extra}]'" in str(info.value)
    assert library in str(info.value) and module in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


INTEGRATIONS = (
    "integrations.httpx_client",
    "integrations.requests_client",
    "integrations.prometheus",
    "integrations.fastapi",
    "integrations.django",
    "integrations.litestar",
    "integrations.otel",
    "integrations.logging",
    "integrations.circuit_breaker",
    "integrations.retry",
)


def test_every_integration_imports_with_its_library() -> None:
    for module in INTEGRATIONS:
        assert importlib.import_module(module).__all__


def test_each_extra_lists_only_libraries_with_code_behind_them() -> None:
    """Every framework or tool extra names a library an integration module imports."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    code = {
        "starlette": "idemkit/handlers/starlette.py",
        "fastapi": "integrations/fastapi.py",
        "django": "integrations/django.py",
        "litestar": "integrations/litestar.py",
        "httpx": "integrations/httpx_client.py",
        "requests": "integrations/requests_client.py",
        "prometheus": "integrations/prometheus.py",
        "otel": "integrations/otel.py",
        "embedded": "idemkit/embedded.py",
        "postgres": "idemkit/patterns/_sql.py",
        "celery": "idemkit/patterns/celery.py",
    }
    tooling = {"dev", "bench", "loadtest"}
    assert set(extras) - tooling == set(code)
    for extra, path in code.items():
        source = (root / path).read_text()
        for requirement in extras[extra]:
            name = requirement.split("[")[0].split(">")[0].split("=")[0].strip()
            module = {
                "prometheus-client": "prometheus_client",
                "opentelemetry-api": "opentelemetry",
                "fakeredis": "fakeredis",
                "psycopg": "psycopg",
            }.get(name, name)
            assert f"import {module}" in source or f"from {module}" in source, (extra, name)


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import metadata, version

    import idemkit

    assert idemkit.__version__ == version("idemkit")
    assert "Typing :: Typed" in metadata("idemkit").get_all("Classifier")
