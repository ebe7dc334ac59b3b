"""Two tabs in Locust's web UI: outcomes per route, and violations so far.

Locust's React UI renders extra tabs from ``template_args`` (``extended_tabs``,
``extended_tables``) and fills them from an ``extended_stats`` list added to the
``/stats/requests`` answer it polls; this is the supported extension path (see Locust's
``examples/extend_web_ui.py``). The numbers are the master's merged tally, so they are the
same ones the final report and verdict use. Latency stays in Locust's own tables.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import Response, request

if TYPE_CHECKING:
    from locust.web import WebUI

    from integrations.locust.plugin import KitState

__all__ = ["OUTCOME_COLUMNS", "install", "outcome_rows", "violation_rows"]

OUTCOMES_TAB = "idemkit-outcomes"
VIOLATIONS_TAB = "idemkit-violations"

# (row key, column title, key in Tally.table()); row keys are plain words because the UI
# camel-cases them.
OUTCOME_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("route", "Route", "route"),
    ("operations", "Operations", "operations"),
    ("acknowledged", "Acknowledged", "acknowledged"),
    ("refused", "Refused", "refused"),
    ("gave_up", "Gave up", "gave up"),
    ("executed", "Executed", "executed"),
    ("replayed", "Replayed", "replayed"),
    ("in_flight", "409", "409"),
    ("reused_key", "422", "422"),
    ("throttled", "429", "429"),
    ("unavailable", "503", "503"),
    ("client_error", "Other 4xx", "4xx"),
    ("server_error", "Other 5xx", "5xx"),
    ("timeouts", "Timeouts", "timeout"),
    ("disconnected", "Disconnected", "disconnected"),
    ("abandoned", "Abandoned", "abandoned"),
    ("violations", "Violations", "violations"),
)


def outcome_rows(state: KitState) -> list[dict[str, Any]]:
    table = state.tally.table()
    rows = [{key: row.get(src, 0) for key, _, src in OUTCOME_COLUMNS} for row in table]
    if len(rows) > 1:
        total: dict[str, Any] = {"route": "All routes"}
        for key, _, _ in OUTCOME_COLUMNS[1:]:
            total[key] = sum(int(r[key]) for r in rows)
        rows.append(total)
    return rows


def violation_rows(state: KitState) -> list[dict[str, Any]]:
    verification = state.tally.verification
    return [
        {"kind": kind, "count": n, "example": (verification.violations.get(kind) or [""])[0]}
        for kind, n in sorted(verification.counts.items())
    ] or [{"kind": "none so far", "count": 0, "example": ""}]


def install(web_ui: WebUI, state: KitState) -> None:
    web_ui.template_args["extended_tabs"] = [
        {"title": "Idempotency", "key": OUTCOMES_TAB},
        {"title": "Idempotency violations", "key": VIOLATIONS_TAB},
    ]
    web_ui.template_args["extended_tables"] = [
        {
            "key": OUTCOMES_TAB,
            "structure": [{"key": key, "title": title} for key, title, _ in OUTCOME_COLUMNS],
        },
        {
            "key": VIOLATIONS_TAB,
            "structure": [
                {"key": "kind", "title": "Violation"},
                {"key": "count", "title": "Count"},
                {"key": "example", "title": "First example"},
            ],
        },
    ]

    def extend_stats(response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or not response.is_json:
            return response
        doc = response.get_json()
        if isinstance(doc, dict):
            doc["extended_stats"] = [
                {"key": OUTCOMES_TAB, "data": outcome_rows(state)},
                {"key": VIOLATIONS_TAB, "data": violation_rows(state)},
            ]
            response.set_data(json.dumps(doc))
        return response

    if web_ui.app is not None:
        web_ui.app.after_request(extend_stats)
