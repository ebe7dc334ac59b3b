"""The Markdown report of a run and its latency plot (a hand-written SVG, no plotting library).

Input is the run summary the kit writes with ``--idem-json`` (a plain dict, see
:func:`integrations.locust.plugin.summarize`): verification, outcome counts per route,
Locust's per-request statistics, latency per second, and optionally a fault timeline and a
description of the service (the fault driver adds both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from integrations.locust.answers import OUTCOMES
from integrations.locust.tally import RESULTS

__all__ = ["percentile", "render_markdown", "svg_plot", "write_report"]


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


def write_report(summary: Mapping[str, Any], path: Path) -> Path:
    """Write ``path`` (Markdown) and its plot next to it (same name, ``.svg``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot = path.with_suffix(".svg")
    plot.write_text(svg_plot(summary), encoding="utf-8")
    path.write_text(render_markdown(summary, plot.name), encoding="utf-8")
    return path


def render_markdown(summary: Mapping[str, Any], plot_name: str) -> str:
    v = summary.get("verification", {})
    ok = bool(v.get("ok"))
    lines = [
        f"# Idempotency load test: {summary.get('title') or summary.get('host', '')}",
        "",
    ]
    if summary.get("command"):
        lines += ["Command:", "", "```", str(summary["command"]), "```", ""]
    if summary.get("service"):
        lines += [str(summary["service"]), ""]
    lines += [f"## Verification: {'PASS' if ok else 'FAIL'}", ""]
    lines += [f"- {name}: {text}" for name, text in v.get("checks", {}).items()]
    for kind, n in sorted(v.get("counts", {}).items()):
        lines.append(f"- **VIOLATION {kind}: {n}**")
        lines += [f"  - {example}" for example in v.get("violations", {}).get(kind, [])]
    timeline = summary.get("timeline") or []
    if timeline:
        t0 = _start(summary)
        lines += ["", "## Fault timeline (seconds after the first request)", ""]
        lines += [f"- {at - t0:.1f} s: {what}" for at, what in timeline]
    lines += ["", "## Outcomes per route", "", *_routes_table(summary.get("routes", []))]
    lines += [
        "",
        "Operations end *acknowledged* (a 2xx reached the client), *refused* (another final "
        "answer) or *gave up* (attempts or time ran out on answers that asked for a retry). "
        "Attempt columns: *executed* and *replayed* (`Idempotent-Replayed: true`) answers, "
        "409 (first attempt in flight), 422 (key reused with another body), 429/503 (retry "
        "later), other 4xx/5xx, timeouts and dropped connections, and attempts the client "
        "*abandoned* on purpose.",
        "",
        "## Latency (real HTTP requests only)",
        "",
        "| type | name | requests | failures | p50 ms | p95 ms | p99 ms | max ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in summary.get("requests", []):
        lines.append(
            f"| {row['type']} | {row['name']} | {row['requests']} | {row['failures']} "
            f"| {row['p50']} | {row['p95']} | {row['p99']} | {row['max']} |"
        )
    lines += ["", "Failures by kind:", ""]
    failures = sorted(summary.get("failures", []), key=lambda f: -int(f["n"]))
    lines += [f"- {_request_name(f)}: {f['error']}: {f['n']}" for f in failures] or ["- none"]
    lines += [
        "",
        f"![latency per second]({plot_name})",
        "",
        "Abandoned attempts are not requests here (the client gave up on them on purpose); "
        "answers asking for a retry count as successes unless they were the last one before "
        "giving up; timeouts and dropped connections count as failures.",
    ]
    info = summary.get("info") or {}
    if info:
        lines += ["", "## Reported by the service (server-side checks)", ""]
        for name, value in info.items():
            if isinstance(value, Mapping):
                lines.append(f"- {name}:")
                lines += [f"  - {k}: {n}" for k, n in sorted(value.items())]
            else:
                lines.append(f"- {name}: {value}")
    return "\n".join(lines) + "\n"


def _request_name(row: Mapping[str, Any]) -> str:
    method, name = str(row.get("method", "")), str(row.get("name", ""))
    return name if name.startswith(method + " ") else f"{method} {name}".strip()


def _routes_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns = ["operations", *RESULTS, *OUTCOMES, "violations"]
    out = [
        "| route | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for row in rows:
        out.append(f"| {row['route']} | " + " | ".join(str(row.get(c, 0)) for c in columns) + " |")
    return out


def _hist(raw: Mapping[Any, Any]) -> dict[int, int]:
    return {int(k): int(v) for k, v in raw.items()}


def _start(summary: Mapping[str, Any]) -> float:
    seconds = [int(s) for s in summary.get("latency", {}).get("per_second", {})]
    return float(min(seconds)) if seconds else float(summary.get("started", 0.0))


def svg_plot(summary: Mapping[str, Any], width: int = 720, height: int = 300) -> str:
    """Latency p50/p95/p99 (lines, left axis) and requests per second (bars, right axis)."""
    raw = summary.get("latency", {}).get("per_second", {})
    t0 = int(_start(summary))
    per_second = {int(s) - t0: _hist(h) for s, h in raw.items() if h}
    left, right, top, bottom = 56, 56, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    seconds = max(per_second, default=0) + 1
    quantiles = (0.5, 0.95, 0.99)
    series = {q: [percentile(per_second.get(s, {}), q) for s in range(seconds)] for q in quantiles}
    counts = [sum(per_second.get(s, {}).values()) for s in range(seconds)]
    max_ms = max([1, *series[0.99]])
    max_rps = max([1, *counts])

    def x(s: float) -> float:
        return left + plot_w * (s + 0.5) / max(seconds, 1)

    def y(v: float, top_value: float) -> float:
        return top + plot_h * (1 - v / top_value)

    title = _escape(str(summary.get("title") or summary.get("host", "")))
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">Latency per second (ms, left) and requests/s '
        f"(bars, right): {title}</text>",
    ]
    bar_w = max(plot_w / max(seconds, 1) * 0.7, 1)
    for s, n in enumerate(counts):
        out.append(
            f'<rect x="{x(s) - bar_w / 2:.1f}" y="{y(n, max_rps):.1f}" width="{bar_w:.1f}" '
            f'height="{top + plot_h - y(n, max_rps):.1f}" fill="#dde6f0"/>'
        )
    for q, color, offset in ((0.5, "#2b7bb9", 0), (0.95, "#e69500", 48), (0.99, "#c0392b", 96)):
        points = " ".join(f"{x(s):.1f},{y(v, max_ms):.1f}" for s, v in enumerate(series[q]))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{points}"/>')
        out.append(
            f'<text x="{left + 8 + offset}" y="{top + 12}" fill="{color}">p{round(q * 100)}</text>'
        )
    for at, what in summary.get("timeline") or []:
        fx = x(float(at) - t0 - 0.5)
        out.append(
            f'<line x1="{fx:.1f}" y1="{top}" x2="{fx:.1f}" y2="{top + plot_h}" '
            f'stroke="#555" stroke-dasharray="4,3"><title>{_escape(str(what))}</title></line>'
        )
    axis_y = top + plot_h
    out += [
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="#333"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{max_ms}</text>',
        f'<text x="{left - 6}" y="{axis_y}" text-anchor="end">0</text>',
        f'<text x="{left + plot_w + 6}" y="{top + 4}">{max_rps}/s</text>',
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
        f"seconds since the first request (dashed: fault events)</text>",
    ]
    for s in range(0, seconds, max(1, seconds // 10)):
        out.append(f'<text x="{x(s):.1f}" y="{axis_y + 14}" text-anchor="middle">{s}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
