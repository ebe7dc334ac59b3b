"""The kit under real Locust runs: the README example, a service that is not the shop, the
web UI while a run is going, and a distributed run (master and workers).

Each run is a few seconds of Locust in a subprocess against uvicorn in another; both are
bounded and killed by process group.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from idemkit.testing import free_port
from tests.integrations.locust_support import ROOT, child_env, run_locust, serve
from tests.readme import block

EXAMPLE = ROOT / "loadtests" / "example_locustfile.py"
TARGET_LOCUSTFILE = Path(__file__).with_name("locustfile_target.py")
SHOP = "loadtests.service:app_factory"


def readme_example() -> str:
    """The README's example locustfile (the block named "locustfile")."""
    return block("locustfile")


def test_the_readme_example_is_the_shipped_file() -> None:
    assert readme_example() == EXAMPLE.read_text(encoding="utf-8")


@pytest.mark.timeout(90)
def test_the_readme_example_passes_against_the_demo_service(tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(readme_example(), encoding="utf-8")
    report = tmp_path / "out" / "report.md"
    with serve(SHOP, "--factory", log=tmp_path / "shop.log") as base:
        run = run_locust(locustfile, base, "--idem-report", str(report))
    assert run.returncode == 0, run.stdout[-4000:]
    assert "idempotency verification: PASS" in run.stdout
    text = report.read_text()
    assert "## Verification: PASS" in text and "| POST /payments |" in text
    assert report.with_suffix(".svg").read_text().startswith("<svg")


@pytest.mark.timeout(90)
def test_the_readme_example_catches_the_shop_without_its_middleware(tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(readme_example(), encoding="utf-8")
    log = tmp_path / "shop.log"
    with serve(SHOP, "--factory", log=log, SHOP_BROKEN="no-middleware") as base:
        run = run_locust(locustfile, base)
    assert run.returncode == 1, run.stdout[-4000:]
    assert "idempotency verification: FAIL" in run.stdout
    for kind in ("executed-twice", "answers-differ", "reused-key-accepted"):
        assert f"VIOLATION {kind}" in run.stdout, run.stdout[-4000:]


def _target_run(tmp_path: Path, redis_url: str, **env: str) -> tuple[int, dict[str, object]]:
    result = tmp_path / "result.json"
    app = "tests.integrations.locust_target:app"
    with serve(app, log=tmp_path / "target.log", REDIS_URL=redis_url, **env) as base:
        run = run_locust(TARGET_LOCUSTFILE, base, "--idem-json", str(result))
    doc: dict[str, object] = json.loads(result.read_text())
    return run.returncode, doc


@pytest.mark.timeout(90)
def test_a_service_that_is_not_the_shop_verifies_from_the_client_side(
    tmp_path: Path, redis_url: str
) -> None:
    code, doc = _target_run(tmp_path, redis_url)
    verification = doc["verification"]
    assert isinstance(verification, dict)
    assert code == 0 and verification["ok"], verification
    assert set(verification["checks"]) == {"operations", "answers per key", "stories"}
    routes = {row["route"]: row for row in doc["routes"]}  # type: ignore[attr-defined]
    assert set(routes) == {"POST /transfers", "PATCH /accounts/{name}"}
    for row in routes.values():
        assert row["acknowledged"] > 0 and row["violations"] == 0
    assert sum(r["replayed"] for r in routes.values()) > 0
    assert sum(r["422"] for r in routes.values()) > 0


@pytest.mark.timeout(90)
def test_the_same_service_without_its_middleware_fails(tmp_path: Path, redis_url: str) -> None:
    code, doc = _target_run(tmp_path, redis_url, TARGET_BROKEN="1")
    verification = doc["verification"]
    assert isinstance(verification, dict)
    assert code == 1 and not verification["ok"]
    assert {"executed-twice", "answers-differ", "reused-key-accepted"} <= set(
        verification["counts"]
    )
    # The stamp the locustfile ignores never shows up as a difference; real fields do.
    differ = "\n".join(verification["violations"]["answers-differ"])
    assert "served_at" not in differ and "transfer" in differ


@pytest.mark.timeout(90)
def test_the_web_ui_shows_idempotency_outcomes_while_it_runs(tmp_path: Path) -> None:
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    with serve(SHOP, "--factory", log=tmp_path / "shop.log") as base:
        command = [
            sys.executable, "-m", "locust", "-f", str(EXAMPLE), "--host", base,
            "--web-host", "127.0.0.1", "--web-port", str(port), "--autostart",
            "--autoquit", "0", "-u", "4", "-r", "4", "-t", "5s",
        ]  # fmt: skip
        with (tmp_path / "locust.log").open("wb") as log:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=child_env(), stdout=log, stderr=subprocess.STDOUT
            )
        try:
            rows: list[dict[str, object]] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not rows:
                time.sleep(0.5)
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    stats = httpx.get(f"{ui}/stats/requests", timeout=2).json()
                    tabs = {t["key"]: t["data"] for t in stats["extended_stats"]}
                    rows = [r for r in tabs["idemkit-outcomes"] if r["operations"]]
            page = httpx.get(f"{ui}/", timeout=5).text
            code = proc.wait(40)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    assert rows and rows[0]["route"] == "POST /payments", rows
    assert {"acknowledged", "replayed", "in_flight", "reused_key", "abandoned"} <= set(rows[0])
    assert tabs["idemkit-violations"] == [{"kind": "none so far", "count": 0, "example": ""}]
    assert '"extended_tabs"' in page and "Idempotency violations" in page
    assert code == 0, (tmp_path / "locust.log").read_text()[-3000:]


@pytest.mark.timeout(90)
def test_a_distributed_run_merges_every_worker_on_the_master(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    log = tmp_path / "shop.log"
    with serve(SHOP, "--factory", log=log, SHOP_BROKEN="no-middleware") as base:
        run = run_locust(EXAMPLE, base, "--processes", "2", "--idem-json", str(result))
    assert run.returncode == 1, run.stdout[-4000:]
    doc = json.loads(result.read_text())
    (row,) = doc["routes"]
    assert row["operations"] > 20 and row["acknowledged"] > 20
    assert doc["verification"]["counts"]["executed-twice"] > 0
    # Latency was shipped from the workers too, for the report's plot.
    assert sum(doc["latency"]["overall"].values()) >= row["operations"]


@pytest.mark.soak
@pytest.mark.timeout(120)
def test_the_installed_wheel_runs_the_readme_example(tmp_path: Path) -> None:
    """Built as a wheel and imported from it (not from this checkout), the kit still works."""
    import zipfile

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=110,
    )
    site = tmp_path / "site"
    (wheel,) = wheels.glob("idemkit-*.whl")
    zipfile.ZipFile(wheel).extractall(site)
    env = {**child_env(), "PYTHONPATH": str(site)}
    code = "import integrations.locust.user as u, loadtests.driver; print(u.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert where.stdout.startswith(str(site))
    locustfile = tmp_path / "example.py"
    locustfile.write_text(readme_example(), encoding="utf-8")
    with serve(SHOP, "--factory", log=tmp_path / "shop.log") as base:
        run = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(locustfile), "--host", base,
             "--headless", "-u", "4", "-r", "4", "-t", "4s", "--only-summary"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=60,
        )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert "idempotency verification: PASS" in run.stdout


@pytest.mark.timeout(60)
def test_a_locustfile_that_runs_none_of_the_kits_users_gets_no_verdict(tmp_path: Path) -> None:
    locustfile = tmp_path / "other.py"
    locustfile.write_text(
        "from locust import User, constant, task\n"
        "from integrations.locust import IdempotentUser  # imported, never run\n\n\n"
        "class Idle(User):\n"
        "    wait_time = constant(0.1)\n\n"
        "    @task\n"
        "    def nothing(self) -> None:\n"
        "        pass\n",
        encoding="utf-8",
    )
    run = run_locust(locustfile, "http://127.0.0.1:1", seconds=2, users=1)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "idempotency verification" not in run.stdout
