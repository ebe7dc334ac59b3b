"""The Markdown report and its latency plot (a hand-written SVG: no plotting dependency)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loadtests.driver import Outcome

__all__ = ["percentile", "summarize", "svg_plot", "write_report"]


def percentile(histogram: Mapping[int, int], q: float) -> int:
    """The ``q`` quantile (0..1) of a millisecond histogram; 0 when empty."""
    total = sum(histogram.values())
    if not total:
        return 0
    rank = q * total
    seen = 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= rank:
            return ms
    return max(histogram)


def _failure_kind(error: str) -> str:
    # "CatchResponseError('no response: ReadTimeout')" -> "no response: ReadTimeout"
    match = re.fullmatch(r"\w+\((['\"])(.*)\1\)", error.strip())
    return match.group(2) if match else error


def _hist(raw: Mapping[str, int]) -> dict[int, int]:
    return {int(k): int(v) for k, v in raw.items()}


def summarize(outcome: Outcome) -> dict[str, Any]:
    http = [r for r in outcome.stats if r.get("Type") != "IDEM" and r.get("Name") != "Aggregated"]
    idem = {r["Name"]: int(r["Request Count"]) for r in outcome.stats if r.get("Type") == "IDEM"}
    by_kind: Counter[str] = Counter()
    for row in outcome.failures:
        by_kind[_failure_kind(row["Error"])] += int(row["Occurrences"])
    hist = _hist(outcome.latency.get("latency_ms", {}))
    return {
        "requests": sum(int(r["Request Count"]) for r in http),
        "failures": sum(int(r["Failure Count"]) for r in http),
        "failures_by_kind": dict(by_kind.most_common()),
        "replays": idem.get("replayed", 0),
        "conflicts_409": idem.get("conflict-409", 0),
        "mismatches_422": idem.get("mismatch-422", 0),
        "unavailable_503": idem.get("unavailable-503", 0),
        "p50_ms": percentile(hist, 0.50),
        "p95_ms": percentile(hist, 0.95),
        "p99_ms": percentile(hist, 0.99),
        "max_ms": max(hist, default=0),
        "middleware_events": outcome.ledger.get("events", {}),
        "verification": outcome.verification.to_dict(),
    }


def write_report(outcome: Outcome, path: Path) -> Path:
    from loadtests.driver import command_line

    opts = outcome.options
    s = summarize(outcome)
    path.parent.mkdir(parents=True, exist_ok=True)
    plot = path.with_suffix(".svg")
    plot.write_text(svg_plot(outcome), encoding="utf-8")
    v = outcome.verification
    lines = [
        f"# Load test: {opts.fault or 'no fault'}",
        "",
        "Command:",
        "",
        "```",
        opts.command or command_line(opts),
        "```",
        "",
        f"Service: the shop (`loadtests/service.py`) on uvicorn, {opts.workers} worker(s), "
        + ("embedded store" if opts.embedded else "a throwaway redis-server with AOF")
        + f"; middleware lease {opts.lease:g} s; {opts.users} Locust users for "
        f"{opts.duration:g} s (`loadtests/locustfile.py`).",
        "",
        f"## Verification: {'PASS' if v.ok else 'FAIL'}",
        "",
        *[f"- {name}: {summary}" for name, summary in v.checks.items()],
    ]
    for kind, n in sorted(v.counts.items()):
        lines.append(f"- **VIOLATION {kind}: {n}**")
        lines += [f"  - {example}" for example in v.violations[kind]]
    if outcome.timeline:
        lines += ["", "## Fault timeline (seconds after Locust started)", ""]
        lines += [f"- {at:.1f} s: {what}" for at, what in outcome.timeline]
    lines += [
        "",
        "## Traffic",
        "",
        "| metric | value |",
        "| --- | ---: |",
        f"| HTTP requests | {s['requests']} |",
        f"| failures | {s['failures']} |",
        f"| replays (`Idempotent-Replayed: true`) | {s['replays']} |",
        f"| conflicts (409, first attempt in flight) | {s['conflicts_409']} |",
        f"| mismatches (422, key reused with another body) | {s['mismatches_422']} |",
        f"| store unavailable (503) | {s['unavailable_503']} |",
        f"| latency p50 / p95 / p99 / max | {s['p50_ms']} / {s['p95_ms']} / {s['p99_ms']}"
        f" / {s['max_ms']} ms |",
        "",
        "Failures by kind:",
        "",
    ]
    lines += [f"- {kind}: {n}" for kind, n in s["failures_by_kind"].items()] or ["- none"]
    events = s["middleware_events"]
    if events:
        lines += ["", "Middleware events (observer, all workers):", ""]
        lines += [f"- {name}: {n}" for name, n in sorted(events.items())]
    lines += [
        "",
        "## Per request type (Locust)",
        "",
        "| type | name | requests | failures | p50 ms | p95 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in outcome.stats:
        if row.get("Type") == "IDEM" or row.get("Name") == "Aggregated":
            continue
        lines.append(
            f"| {row['Type']} | {row['Name']} | {row['Request Count']} | {row['Failure Count']}"
            f" | {row['50%']} | {row['95%']} | {row['99%']} |"
        )
    lines += [
        "",
        f"![latency per second]({plot.name})",
        "",
        "Client-side timeouts are 1.5 s and one first payment attempt in four is slowed past "
        "that on purpose, so p95/p99 include those deliberate timeouts.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def svg_plot(outcome: Outcome, width: int = 720, height: int = 300) -> str:
    """Latency p50/p95/p99 (lines, left axis) and requests per second (bars) per second."""
    per_second = {int(s): _hist(h) for s, h in outcome.latency.get("per_second", {}).items() if h}
    left, right, top, bottom = 56, 56, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    seconds = max(per_second, default=0) + 1
    series = {
        q: [percentile(per_second.get(s, {}), q) for s in range(seconds)] for q in (0.5, 0.95, 0.99)
    }
    counts = [sum(per_second.get(s, {}).values()) for s in range(seconds)]
    max_ms = max([1, *series[0.99]])
    max_rps = max([1, *counts])

    def x(s: float) -> float:
        return left + plot_w * (s + 0.5) / max(seconds, 1)

    def y(v: float, top_value: float) -> float:
        return top + plot_h * (1 - v / top_value)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">Latency per second (ms, left) and requests/s '
        f"(bars, right): {outcome.options.fault or 'no fault'}</text>",
    ]
    bar_w = max(plot_w / max(seconds, 1) * 0.7, 1)
    for s, n in enumerate(counts):
        out.append(
            f'<rect x="{x(s) - bar_w / 2:.1f}" y="{y(n, max_rps):.1f}" width="{bar_w:.1f}" '
            f'height="{top + plot_h - y(n, max_rps):.1f}" fill="#dde6f0"/>'
        )
    for q, color in ((0.5, "#2b7bb9"), (0.95, "#e69500"), (0.99, "#c0392b")):
        points = " ".join(f"{x(s):.1f},{y(v, max_ms):.1f}" for s, v in enumerate(series[q]))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{points}"/>')
        label = f"p{round(q * 100)}"
        lx = left + 8 + {0.5: 0, 0.95: 48, 0.99: 96}[q]
        out.append(f'<text x="{lx}" y="{top + 12}" fill="{color}">{label}</text>')
    for at, what in outcome.timeline:
        fx = x(at - 0.5)
        out.append(
            f'<line x1="{fx:.1f}" y1="{top}" x2="{fx:.1f}" y2="{top + plot_h}" '
            f'stroke="#555" stroke-dasharray="4,3"/>'
        )
        out.append(f"<title>{_escape(what)}</title>")
    axis_y = top + plot_h
    out += [
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="#333"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{max_ms}</text>',
        f'<text x="{left - 6}" y="{axis_y}" text-anchor="end">0</text>',
        f'<text x="{left + plot_w + 6}" y="{top + 4}">{max_rps}/s</text>',
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
        f"seconds since Locust started (dashed: fault events)</text>",
    ]
    for s in range(0, seconds, max(1, seconds // 10)):
        out.append(f'<text x="{x(s):.1f}" y="{axis_y + 14}" text-anchor="middle">{s}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
