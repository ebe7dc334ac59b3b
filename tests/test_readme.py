"""Every Python block of README.md is named and run by a test, so the README cannot drift."""

from __future__ import annotations

from collections import Counter

from tests.readme import ROOT, blocks

# Which test module runs which README blocks (each runs the block and checks its behaviour).
RUNNERS = {
    "tests/idemkit/test_readme_idempotency.py": {
        "middleware",
        "decorator-fastapi",
        "decorator-litestar",
        "decorator-functions",
        "fencing",
        "stable-principal",
    },
    "tests/integrations/test_readme_integrations.py": {
        "fastapi",
        "django",
        "litestar",
        "observability",
    },
    "tests/integrations/test_clients_readme.py": {
        "httpx-client",
        "requests-client",
        "circuit-breaker",
    },
    "tests/locks/test_readme_locks.py": {"lock", "lock-sql"},
    "tests/crdt/test_readme_crdt.py": {"crdt-regions", "crdt-python"},
    "tests/patterns/test_readme.py": {
        "outbox",
        "relay",
        "consumer",
        "celery",
        "saga",
    },
    "tests/integrations/test_locust_runs.py": {"locustfile"},
}


def test_every_block_has_a_unique_name() -> None:
    unnamed = [b.line for b in blocks() if b.name is None]
    assert not unnamed, f"README.md python blocks without a readme-test marker at lines {unnamed}"
    twice = [name for name, n in Counter(b.name for b in blocks()).items() if n > 1]
    assert not twice, twice


def test_every_block_is_run_by_a_test() -> None:
    claimed = {name: path for path, names in RUNNERS.items() for name in names}
    names = {b.name for b in blocks()}
    assert names == set(claimed), (names - set(claimed), set(claimed) - names)
    for path, wanted in RUNNERS.items():
        source = (ROOT / path).read_text(encoding="utf-8")
        for name in wanted:
            assert f'"{name}"' in source, f"{path} does not run README block {name!r}"
