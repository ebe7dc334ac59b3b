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
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, library, None)  # "import <library>" now fails
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module(module)
    assert f"pip install 'idemkit[{extra}]'" in str(info.value)
    assert library in str(info.value) and module in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


def test_the_client_modules_import_with_their_libraries() -> None:
    for module in ("integrations.httpx_client", "integrations.requests_client"):
        assert importlib.import_module(module).__all__
