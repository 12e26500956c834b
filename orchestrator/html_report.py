"""`--html FILE`: the run as one self-contained HTML page for people: every measured candidate's raw latency samples
as a strip plot with its box (log scale, so a 0.02 ms and a 40 ms candidate share one axis), the speedup with its
interval, failures with their whole messages, the environment and the settings.

The plot is SVG drawn here, from the samples report.json keeps: no script, no font or library fetched, so the page
renders the same offline, in a CI artifact viewer or from a mail attachment.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from orchestrator.formatting import significant, speedup_text

PLOT_WIDTH, ROW_HEIGHT, LABEL_WIDTH, MARGIN = 900, 34, 230, 24
MAX_POINTS = 400  # samples drawn per candidate (evenly taken from the sorted samples, so the shape is kept)

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .verdict{font-size:16px;margin:10px 0 18px}
table{border-collapse:collapse;margin:6px 0} td,th{padding:3px 10px;border-bottom:1px solid #dde2ea;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums} tr.winner td{background:#eaf6ec;font-weight:600}
.failure{color:#8a1c1c} code{font-size:13px} pre{white-space:pre-wrap;background:#f5f6f8;padding:6px 10px;margin:2px 0}
svg text{font:12px system-ui,sans-serif;fill:#1d2430} .muted{color:#667085}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _samples_ms(candidate: dict) -> np.ndarray:
    rounds = [np.asarray(r, dtype=np.float64) for r in candidate.get("latencies_ns") or [] if r]
    return np.sort(np.concatenate(rounds)) / 1e6 if rounds else np.empty(0)


def latency_plot(candidates: list[dict], winner: str | None) -> str:
    """An SVG strip + box plot of each candidate's samples on a log-scaled time axis, fastest median on top."""
    rows = [(c, s) for c in candidates if (s := _samples_ms(c)).size]
    rows.sort(key=lambda item: float(np.median(item[1])))
    if not rows:
        return '<p class="muted">No candidate was timed.</p>'
    low = math.log10(min(float(s[0]) for _, s in rows) * 0.8)
    high = math.log10(max(float(s[-1]) for _, s in rows) * 1.25)
    span = max(high - low, 1e-9)
    width = PLOT_WIDTH - LABEL_WIDTH - MARGIN
    height = ROW_HEIGHT * len(rows) + 2 * MARGIN

    def x(ms: float) -> float:
        return LABEL_WIDTH + (math.log10(ms) - low) / span * width

    parts = [f'<svg id="latency-plot" xmlns="http://www.w3.org/2000/svg" width="{PLOT_WIDTH}" '
             f'height="{height + 16}" role="img" aria-label="latency per candidate, log scale">']
    for exponent in range(math.floor(low), math.ceil(high) + 1):  # decades and their 2x / 5x marks
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0 ** exponent
            if low <= math.log10(value) <= high:
                px = x(value)
                parts.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{MARGIN - 6}" y2="{height - MARGIN + 4}" '
                             f'stroke="#dde2ea"/><text x="{px:.1f}" y="{height - MARGIN + 18}" '
                             f'text-anchor="middle">{value:g}</text>')
    parts.append(f'<text x="{LABEL_WIDTH + width / 2:.0f}" y="{height + 12}" text-anchor="middle">'
                 'latency per inference, ms (log scale)</text>')
    rng = np.random.default_rng(0)  # the jitter that spreads points vertically, the same on every render
    for index, (candidate, samples) in enumerate(rows):
        mid = MARGIN + ROW_HEIGHT * index + ROW_HEIGHT / 2
        colour = "#1f7a3a" if candidate["name"] == winner else ("#6b5b95" if candidate.get("is_original")
                                                                else "#2f6fb0")
        label = candidate["name"] + ("  (winner)" if candidate["name"] == winner else "")
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{mid + 4:.1f}" text-anchor="end">{_e(label)}</text>')
        shown = samples[np.linspace(0, samples.size - 1, min(samples.size, MAX_POINTS)).astype(int)]
        jitter = rng.uniform(-ROW_HEIGHT * 0.3, ROW_HEIGHT * 0.3, shown.size)
        parts += [f'<circle cx="{x(v):.1f}" cy="{mid + j:.1f}" r="1.6" fill="{colour}" fill-opacity="0.35"/>'
                  for v, j in zip(shown, jitter)]
        q1, median, q3 = np.percentile(samples, [25, 50, 75])
        box_top = mid - ROW_HEIGHT * 0.32
        parts.append(f'<rect x="{x(q1):.1f}" y="{box_top:.1f}" width="{max(x(q3) - x(q1), 1):.1f}" '
                     f'height="{ROW_HEIGHT * 0.64:.1f}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
                     f'<line x1="{x(median):.1f}" x2="{x(median):.1f}" y1="{box_top:.1f}" '
                     f'y2="{box_top + ROW_HEIGHT * 0.64:.1f}" stroke="{colour}" stroke-width="3">'
                     f'<title>{_e(candidate["name"])}: median {median:.4g} ms, IQR {q1:.4g}-{q3:.4g} ms, '
                     f'{samples.size} samples</title></line>')
    parts.append("</svg>")
    return "\n".join(parts)


def _candidate_table(report: dict) -> str:
    winner = report.get("winner")
    measured = sorted((c for c in report.get("candidates", []) if c.get("stats")),
                      key=lambda c: c["stats"]["median_ms"])
    rows = []
    for c in measured:
        stats = c["stats"]
        drop = (c.get("comparison") or {}).get("drop")
        rows.append(f'<tr class="{"winner" if c["name"] == winner else ""}"><td><code>{_e(c["name"])}</code></td>'
                    f'<td>{_e(c["precision"])}</td><td class="num">{significant(stats["median_ms"])}</td>'
                    f'<td class="num">{significant(stats["p90_ms"])}</td><td class="num">{stats["iqr_pct"]:.1f}%</td>'
                    f'<td class="num">{_e(speedup_text(c))}</td>'
                    f'<td class="num">{"" if drop is None or drop == float("inf") else f"{drop:.1e}"}</td>'
                    f'<td>{"winner" if c["name"] == winner else "original" if c.get("is_original") else "ok"}</td>'
                    "</tr>")
    return ('<table id="candidates"><tr><th>candidate</th><th>precision</th><th>median ms</th><th>p90 ms</th>'
            '<th>spread (IQR)</th><th>speedup [95% CI]</th><th>drop</th><th></th></tr>' + "".join(rows) + "</table>")


def _failures(report: dict) -> str:
    failed = [c for c in report.get("candidates", []) if c.get("failure")]
    if not failed:
        return '<p class="muted">Every candidate qualified.</p>'
    items = []
    for c in failed:
        failure = c["failure"]
        detail = "\n".join(p for p in (failure.get("detail", ""), failure.get("runner_log", "")) if p)
        items.append(f'<li><code>{_e(c["name"])}</code>: <span class="failure">{_e(failure["category"])}</span>'
                     f' at {_e(failure.get("stage", ""))}: {_e(failure["message"])}'
                     + (f"<pre>{_e(detail)}</pre>" if detail else "") + "</li>")
    return '<ol id="failures">' + "".join(items) + "</ol>"


def _key_values(values: dict) -> str:
    return "<table>" + "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(v)}</code></td></tr>"
                               for k, v in values.items() if v not in (None, "", [], {})) + "</table>"


def html_report(report: dict) -> str:
    source, config, environment = report.get("source", {}), report.get("config", {}), report.get("environment", {})
    model = Path(str(source.get("path", "model"))).name
    backends = {name: ", ".join(f"{k} {v}" for k, v in versions.items())
                for name, versions in environment.get("backends", {}).items()}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>speedster-run: {_e(model)} on {_e(config.get("device", ""))}</title>
<style>{_STYLE}</style></head><body>
<h1>speedster-run: <code>{_e(model)}</code> on <code>{_e(config.get("device", ""))}</code></h1>
<div class="muted">model sha256 {_e(source.get("sha256", ""))} &middot; wall time {report.get("wall_s", 0.0):.1f} s</div>
<p class="verdict" id="verdict">{_e(report.get("verdict", ""))}</p>
<h2>Latency of every measured candidate</h2>
{latency_plot(report.get("candidates", []), report.get("winner"))}
<h2>Candidates</h2>
{_candidate_table(report)}
<h2>Did not qualify</h2>
{_failures(report)}
<h2>Environment</h2>
{_key_values({**environment.get("host", {}), "threads": environment.get("threads"),
              "sandbox": environment.get("sandbox")})}
{_key_values(backends)}
<h2>Settings</h2>
{_key_values({"command": environment.get("command"), "device": config.get("device"),
              "metric_drop_ths": config.get("metric_drop_ths"), "timing": config.get("timing")})}
</body></html>
"""


def write_html(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(report))
