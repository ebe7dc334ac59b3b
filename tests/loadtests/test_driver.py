"""Short runs of the load-test driver: Locust against uvicorn workers, faults, verification.

The CI versions run for seconds; ``--soak`` adds the full 20 s runs of every fault.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests.__main__ import main
from loadtests.driver import FAULTS, RunOptions, run


def _quiet(line: str) -> None:
    pass


def _check_report(path: Path | None) -> str:
    assert path is not None and path.exists()
    text = path.read_text()
    assert "python -m loadtests run" in text
    assert "p50 / p95 / p99" in text
    assert path.with_suffix(".svg").read_text().startswith("<svg")
    return text


@pytest.mark.timeout(90)
def test_fault_free_run_verifies(tmp_path: Path) -> None:
    outcome = run(RunOptions(duration=7, users=10, workers=2, out_dir=tmp_path), echo=_quiet)
    assert outcome.ok, outcome.verification.lines()
    summary = outcome.summary()
    assert summary["requests"] > 100
    assert summary["replays"] > 0 and summary["conflicts_409"] > 0
    assert summary["mismatches_422"] > 0
    assert outcome.ledger["events"].get("executed", 0) > 0
    assert "Verification: PASS" in _check_report(outcome.report)


@pytest.mark.timeout(90)
def test_redis_restart_mid_run_verifies(tmp_path: Path) -> None:
    outcome = run(
        RunOptions(duration=10, users=10, workers=2, fault="restart-redis", out_dir=tmp_path),
        echo=_quiet,
    )
    assert outcome.ok, outcome.verification.lines()
    assert outcome.timeline[0][1].startswith("kill -9 redis-server")
    # The outage was visible to clients as 503s or timeouts, not as wrong answers.
    assert outcome.summary()["failures"] > 0
    assert "Fault timeline" in _check_report(outcome.report)


@pytest.mark.timeout(60)
def test_cli_exits_non_zero_on_a_double_charge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import loadtests.__main__ as cli

    real = cli.run

    def broken_run(opts: RunOptions) -> object:
        opts.broken = "double-charge"
        opts.out_dir = tmp_path
        return real(opts, echo=_quiet)

    monkeypatch.setattr(cli, "run", broken_run)
    report = tmp_path / "r.md"
    code = main(["run", "--duration", "5s", "--embedded", "--users", "8", "--report", str(report)])
    assert code == 1
    assert "VIOLATION double-charge" in report.read_text()


def test_cli_rejects_impossible_combinations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--embedded", "--fault", "restart-redis"])
    assert "real Redis" in capsys.readouterr().err


@pytest.mark.soak
@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", [None, *FAULTS])
def test_soak_twenty_seconds(tmp_path: Path, fault: str | None) -> None:
    outcome = run(RunOptions(duration=20, fault=fault, out_dir=tmp_path), echo=_quiet)
    assert outcome.ok, outcome.verification.lines()
