"""Short runs of the fault driver: Locust with the kit against uvicorn workers, faults,
planted defects, and a service started with ``--start`` instead of the shop.

The shop's runs use the session's PostgreSQL (an empty schema per test) rather than starting
one each. The CI versions run for seconds; ``--soak`` adds 20 s runs of every fault.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtests.__main__ import main
from loadtests.driver import FAULTS, PATTERN_FAULTS, RunOptions, run
from loadtests.service import HTTP_BROKEN_MODES

TARGET_APP = f"{sys.executable} -m uvicorn tests.integrations.locust_target:app --port {{port}}"
TARGET_LOCUSTFILE = Path(__file__).parents[1] / "integrations" / "locustfile_target.py"


def _quiet(line: str) -> None:
    pass


def _check_report(path: Path | None) -> str:
    assert path is not None and path.exists()
    text = path.read_text()
    assert "python -m loadtests run" in text
    assert "## Outcomes per route" in text and "| Aggregated |" in text
    assert path.with_suffix(".svg").read_text().startswith("<svg")
    return text


@pytest.mark.timeout(90)
def test_fault_free_run_verifies(tmp_path: Path, pg_dsn: str) -> None:
    options = RunOptions(duration=7, users=10, workers=2, out_dir=tmp_path, database=pg_dsn)
    outcome = run(options, echo=_quiet)
    assert outcome.ok, outcome.verification.lines()
    summary = outcome.summary()
    assert summary["requests"] > 100 and summary["failures"] == 0
    assert summary["replays"] > 0 and summary["conflicts_409"] > 0
    assert summary["mismatches_422"] > 0 and summary["abandoned"] > 0
    assert outcome.result["info"]["middleware events (all workers)"]["executed"] > 0
    assert "payments" in outcome.verification.checks  # the ledger hook ran
    checks = outcome.verification.checks  # and the patterns hook, on every store
    assert {"sagas", "order payments", "outbox", "read model"} <= set(checks)
    assert "sales counters (crdt)" in checks["read model"]
    patterns = outcome.result["info"]["transaction patterns"]
    assert patterns["unfinished_sagas"] == patterns["unpublished_events"] == 0
    assert "Verification: PASS" in _check_report(outcome.report)


@pytest.mark.timeout(90)
def test_redis_restart_mid_run_verifies(tmp_path: Path, pg_dsn: str) -> None:
    options = RunOptions(
        duration=10, users=10, fault="restart-redis", out_dir=tmp_path, database=pg_dsn
    )
    outcome = run(options, echo=_quiet)
    assert outcome.ok, outcome.verification.lines()
    assert outcome.timeline[0][1].startswith("kill -9 redis-server")
    # The outage was visible to clients as 503s or timeouts, not as wrong answers.
    summary = outcome.summary()
    assert summary["unavailable_503"] + summary["timeouts"] + summary["failures"] > 0
    assert "Fault timeline" in _check_report(outcome.report)


EXPECTED = {
    "double-charge": {"double-charge", "executed-twice"},
    "no-middleware": {"double-charge", "executed-twice", "reused-key-accepted"},
    "oversell": {"inventory-mismatch"},
    "unstable-replay": {"answers-differ"},
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("broken", HTTP_BROKEN_MODES)
def test_each_planted_defect_is_caught(tmp_path: Path, broken: str) -> None:
    outcome = run(
        RunOptions(duration=4, users=8, workers=1, embedded=True, broken=broken, out_dir=tmp_path),
        echo=_quiet,
    )
    assert not outcome.ok
    found = set(outcome.verification.counts)
    if broken == "oversell":
        assert found & {"oversell", "inventory-mismatch"}, found
    else:
        assert EXPECTED[broken] <= found, found
    assert "Verification: FAIL" in _check_report(outcome.report)


WHERE = {
    "kill-orchestrator": "kill -9 orchestrator-1",
    "pause-orchestrator": "SIGSTOP orchestrator-1",
    "kill-relay": "kill -9 relay-",
    "pause-relay": "SIGSTOP relay-",
    "kill-consumer": "kill -9 consumer-1",
}


@pytest.mark.timeout(100)
@pytest.mark.parametrize("fault", PATTERN_FAULTS)
def test_each_pattern_fault_verifies(tmp_path: Path, pg_dsn: str, fault: str) -> None:
    """``python -m loadtests run --fault kill-orchestrator`` and its siblings: a worker of
    the shop is killed or paused at its fault point, and every check still holds."""
    options = RunOptions(duration=6, users=8, fault=fault, out_dir=tmp_path, database=pg_dsn)
    outcome = run(options, echo=_quiet)
    assert outcome.ok, outcome.verification.lines()
    (_, what), *rest = outcome.timeline
    assert what.startswith(WHERE[fault]) and "at its fault point" in what, what
    assert rest and ("restarted" in rest[0][1] or rest[0][1].startswith("SIGCONT"))
    checks = outcome.verification.checks
    assert checks["sagas"] and checks["outbox"] and checks["read model"]
    if fault.endswith("relay"):
        # The batch the stopped relay had published, not marked, was published again by the
        # relay that took over, and the read model applied it once.
        assert " 0 published again" not in checks["outbox"], checks["outbox"]
    assert "Fault timeline" in _check_report(outcome.report)


PLANTED = [
    ("saga-no-keys", "kill-orchestrator", "double-charge"),
    ("consumer-no-dedup", "kill-consumer", "event-applied-twice"),
]


@pytest.mark.timeout(100)
@pytest.mark.parametrize(("broken", "fault", "kind"), PLANTED)
def test_a_planted_pattern_defect_fails_the_run(
    tmp_path: Path, pg_dsn: str, broken: str, fault: str, kind: str
) -> None:
    """The same fault against a shop whose saga steps carry no idempotency keys, or whose
    consumer does not deduplicate: the checks catch it and the run fails."""
    options = RunOptions(
        duration=6, users=8, fault=fault, broken=broken, out_dir=tmp_path, database=pg_dsn
    )
    outcome = run(options, echo=_quiet)
    assert not outcome.ok
    assert kind in outcome.verification.counts, outcome.verification.lines()
    assert "Verification: FAIL" in _check_report(outcome.report)


@pytest.mark.timeout(90)
def test_cli_runs_any_service_from_its_start_command(tmp_path: Path) -> None:
    report = tmp_path / "ok" / "report.md"
    start = ["--start", TARGET_APP, "--redis", "--locustfile", str(TARGET_LOCUSTFILE)]
    args = ["run", *start, "--duration", "4s", "--users", "5", "--report", str(report)]
    args += ["--out", str(tmp_path / "out")]
    assert main(args) == 0
    text = _check_report(report)
    assert "Verification: PASS" in text and "| PATCH /accounts/{name} |" in text
    assert "with a throwaway redis-server" in text


@pytest.mark.timeout(90)
def test_a_fault_applies_to_a_service_the_driver_started(tmp_path: Path) -> None:
    outcome = run(
        RunOptions(
            duration=6,
            users=6,
            start=TARGET_APP + " --workers 2",
            redis=True,
            locustfile=TARGET_LOCUSTFILE,
            fault="kill-worker",
            out_dir=tmp_path,
        ),
        echo=_quiet,
    )
    assert outcome.ok, outcome.verification.lines()
    assert outcome.timeline[0][1].startswith("kill -9 worker")


@pytest.mark.timeout(90)
def test_a_service_that_is_already_running_is_a_target(tmp_path: Path, redis_url: str) -> None:
    from tests.integrations.locust_support import serve

    app = "tests.integrations.locust_target:app"
    with serve(app, log=tmp_path / "target.log", REDIS_URL=redis_url) as base:
        options = RunOptions(
            duration=3, users=4, target=base, locustfile=TARGET_LOCUSTFILE, out_dir=tmp_path
        )
        outcome = run(options, echo=_quiet)
    assert outcome.ok, outcome.verification.lines()
    assert outcome.summary()["acknowledged"] > 0
    assert f"Service: {base} (already running)" in _check_report(outcome.report)


def test_cli_rejects_impossible_combinations(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["--embedded", "--fault", "restart-redis"], "real Redis"),
        (["--target", "http://127.0.0.1:1"], "need --locustfile"),
        (["--target", "http://127.0.0.1:1", "--locustfile", "x.py", "--fault", "kill-worker"],
         "processes the driver started"),
        (["--start", "app", "--locustfile", "x.py", "--embedded"], "built-in shop"),
        (["--fault", "pause-worker", "--workers", "1"], "--workers 2"),
        (["--start", "app", "--locustfile", "x.py", "--fault", "kill-relay"], "built-in shop"),
        (["--embedded", "--database", "sqlite:///x.db"], "private SQLite"),
        (["--database", "mysql://x"], "postgresql:// or sqlite:///"),
    ]  # fmt: skip
    for args, message in cases:
        with pytest.raises(SystemExit):
            main(["run", *args])
        assert message in capsys.readouterr().err


@pytest.mark.soak
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", [None, *FAULTS])
def test_soak_twenty_seconds(tmp_path: Path, fault: str | None) -> None:
    outcome = run(RunOptions(duration=20, fault=fault, out_dir=tmp_path), echo=_quiet)
    assert outcome.ok, outcome.verification.lines()


@pytest.mark.soak
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", [f for f in FAULTS if f not in PATTERN_FAULTS])
def test_soak_a_started_service(tmp_path: Path, fault: str) -> None:
    options = RunOptions(
        duration=20,
        start=TARGET_APP + " --workers 2",
        redis=True,
        locustfile=TARGET_LOCUSTFILE,
        fault=fault,
        out_dir=tmp_path,
    )
    outcome = run(options, echo=_quiet)
    assert outcome.ok, outcome.verification.lines()
