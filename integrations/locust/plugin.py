"""The kit's wiring into Locust: options, per-process state, worker reports, the verdict.

Importing :mod:`integrations.locust.user` (which a locustfile does to get
:class:`IdempotentUser`) registers these listeners on ``locust.events``:

* ``--idem-report PATH`` (Markdown report and ``PATH.svg`` latency plot) and
  ``--idem-json PATH`` (the run's numbers and verification, machine-readable);
* on every process: a :class:`Tally` fed by the users and by ``events.request`` (latency of
  real HTTP requests only); workers ship their increments with each stats report and the
  master merges them, so its web UI and its verdict cover every worker;
* the web UI gets an "Idempotency" tab (outcomes per route) and an "Idempotency
  violations" tab (:mod:`integrations.locust.webui`);
* on ``quitting`` (master or single process): the client-side verification, then the
  server-side check hooks of the user classes, the report, and a non-zero
  ``environment.process_exit_code`` when anything was violated.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from integrations.locust.checks import CheckContext, ServerCheck, run_checks
from integrations.locust.report import write_report
from integrations.locust.tally import Tally
from integrations.locust.verdict import Verification

__all__ = ["KitState", "finish", "kit_state", "summarize"]

log = logging.getLogger("idemkit.locust")
# Locust prints its own tables through this logger (plain lines on stdout).
console = logging.getLogger("locust.stats_logger")

VIOLATION_EXIT_CODE = 1
_WIRE_KEY = "idemkit"


@dataclass
class KitState:
    tally: Tally
    checks: list[ServerCheck] = field(default_factory=list)
    active: bool = True  # an IdempotentUser is among the run's user classes
    started: float = field(default_factory=time.time)
    verification: Verification | None = None  # set once the run is finished


_states: weakref.WeakKeyDictionary[Environment, KitState] = weakref.WeakKeyDictionary()


def kit_state(environment: Environment) -> KitState:
    state = _states.get(environment)
    if state is None:
        classes = environment.user_classes or []
        checks = _server_checks(classes)
        active = any(getattr(c, "idemkit_user", False) for c in classes)
        state = _states[environment] = KitState(Tally(keep_acks=bool(checks)), checks, active)
    return state


def _server_checks(user_classes: Iterable[type]) -> list[ServerCheck]:
    found: list[ServerCheck] = []
    for cls in user_classes:
        for check in getattr(cls, "server_checks", ()):
            if check not in found:
                found.append(check)
    return found


def _options(parser: Any, **_: Any) -> None:
    parser.add_argument(
        "--idem-report",
        default="",
        metavar="PATH",
        help="idemkit: write the Markdown report of the run here (and its plot as PATH.svg)",
        include_in_web_ui=False,
    )
    parser.add_argument(
        "--idem-json",
        default="",
        metavar="PATH",
        help="idemkit: write the run's outcome counts and verification here as JSON",
        include_in_web_ui=False,
    )


def _init(environment: Environment, **_: Any) -> None:
    state = kit_state(environment)
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def ship(client_id: str, data: dict[str, Any]) -> None:
            data[_WIRE_KEY] = state.tally.drain()

        _listen(environment.events.report_to_master, ship)
    elif isinstance(runner, MasterRunner):

        def merge(client_id: str, data: dict[str, Any]) -> None:
            if _WIRE_KEY in data:
                state.tally.merge_wire(data[_WIRE_KEY])

        _listen(environment.events.worker_report, merge)
    if not isinstance(runner, MasterRunner):

        def on_request(response_time: float, exception: BaseException | None, **kw: Any) -> None:
            state.tally.request(response_time, exception is not None, kw.get("start_time"))

        _listen(environment.events.request, on_request)
    if environment.web_ui is not None:
        from integrations.locust.webui import install

        install(environment.web_ui, state)


def _test_start(environment: Environment, **_: Any) -> None:
    kit_state(environment).started = time.time()


def _quitting(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        return
    finish(environment)


def _listen(hook: Any, listener: Callable[..., None]) -> None:
    hook.add_listener(listener)


_listen(events.init_command_line_parser, _options)
_listen(events.init, _init)
_listen(events.test_start, _test_start)
_listen(events.quitting, _quitting)


def finish(environment: Environment) -> Verification:
    """Verify the run, run the server-side checks, write the report, set the exit code."""
    state = kit_state(environment)
    if state.verification is not None:
        return state.verification
    if not state.active:
        # The locustfile imports the kit but runs none of its users: nothing to judge.
        state.verification = Verification()
        return state.verification
    result = state.tally.verify()
    host = _host(environment)
    context = CheckContext(host, state.tally.acks, state.tally.acks_dropped)
    run_checks(state.checks, context, result)
    state.verification = result
    for line in result.lines():
        console.info(line)
    options = environment.parsed_options
    summary = summarize(environment, state, result, context.info)
    json_path = getattr(options, "idem_json", "") if options is not None else ""
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    report_path = getattr(options, "idem_report", "") if options is not None else ""
    if report_path:
        written = write_report(summary, Path(report_path))
        console.info(f"idempotency report: {written}")
    if not result.ok and not environment.process_exit_code:
        environment.process_exit_code = VIOLATION_EXIT_CODE
    return result


def _host(environment: Environment) -> str:
    if environment.host:
        return environment.host
    hosts = {getattr(c, "host", None) for c in environment.user_classes or []}
    hosts.discard(None)
    return str(next(iter(hosts))) if len(hosts) == 1 else ""


def summarize(
    environment: Environment,
    state: KitState,
    result: Verification,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run as plain data: what ``--idem-json`` writes and the report is made of."""
    tally = state.tally
    return {
        "host": _host(environment),
        "command": shlex.join(["locust", *sys.argv[1:]]),
        "started": state.started,
        "ended": time.time(),
        "verification": result.to_dict(),
        "routes": tally.table(),
        "requests": _request_rows(environment),
        "failures": [_failure_row(e) for e in environment.stats.errors.values()],
        "latency": {
            "overall": {str(k): v for k, v in tally.latency.items()},
            "per_second": {
                str(s): {str(k): v for k, v in h.items()} for s, h in tally.per_second.items()
            },
            "failures_per_second": {str(s): n for s, n in tally.failures_per_second.items()},
        },
        "info": info or {},
    }


def _failure_row(error: Any) -> dict[str, Any]:
    text = error.parse_error(error.error)
    return {"method": error.method, "name": error.name, "error": text, "n": error.occurrences}


def _request_rows(environment: Environment) -> list[dict[str, Any]]:
    stats = environment.stats
    entries: Sequence[Any] = sorted(stats.entries.values(), key=lambda e: (e.name, e.method))
    rows = []
    for entry in [*entries, stats.total]:
        rows.append(
            {
                "type": entry.method or "",
                "name": entry.name,
                "requests": entry.num_requests,
                "failures": entry.num_failures,
                "p50": entry.get_response_time_percentile(0.5),
                "p95": entry.get_response_time_percentile(0.95),
                "p99": entry.get_response_time_percentile(0.99),
                "max": round(entry.max_response_time or 0),
            }
        )
    return rows
