"""`--summary-md FILE`: the table and verdict as GitHub-flavoured Markdown (for $GITHUB_STEP_SUMMARY and review
comments): measured candidates in a table, failures listed under it with their whole messages."""

from __future__ import annotations

from pathlib import Path

from orchestrator.formatting import significant, speedup_text


def _cell(text: str) -> str:
    """A table cell: pipes escaped and line breaks folded, which would otherwise end the cell or the row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _median(candidate: dict) -> str:
    stats = candidate.get("stats")
    return significant(stats["median_ms"]) if stats else ""


def _drop(candidate: dict) -> str:
    comparison = candidate.get("comparison")
    if not comparison or comparison.get("drop") in (None, float("inf")):
        return ""
    return f"{comparison['drop']:.1e}"


def summary_markdown(report: dict) -> str:
    source = report.get("source", {})
    config = report.get("config", {})
    winner = report.get("winner")
    lines = [f"### speedster-run: `{Path(str(source.get('path', ''))).name}` on `{config.get('device', '')}`", "",
             f"**{_cell(report.get('verdict', ''))}**", ""]
    measured = sorted((c for c in report.get("candidates", []) if c.get("stats")),
                      key=lambda c: (not c.get("is_original"), c["stats"]["median_ms"]))
    if measured:
        lines += ["| candidate | precision | median ms | speedup [95% CI] | drop | status |",
                  "|---|---|--:|--:|--:|---|"]
        for candidate in measured:
            status = "**winner**" if candidate["name"] == winner else "ok"
            if candidate.get("is_original"):
                status += " (original)"
            lines.append(f"| `{candidate['name']}` | {candidate['precision']} | {_median(candidate)} | "
                         f"{speedup_text(candidate)} | {_drop(candidate)} | {status} |")
    failed = [c for c in report.get("candidates", []) if c.get("failure")]
    if failed:
        lines += ["", "<details><summary>"
                  f"{len(failed)} candidate{'s' if len(failed) != 1 else ''} did not qualify</summary>", ""]
        for number, candidate in enumerate(failed, start=1):
            failure = candidate["failure"]
            lines.append(f"{number}. `{candidate['name']}`: **{failure['category']}**: {_cell(failure['message'])}")
        lines += ["", "</details>"]
    lines += ["", f"Wall time {report.get('wall_s', 0.0):.1f} s; model sha256 `{source.get('sha256', '')[:12]}`."]
    return "\n".join(lines) + "\n"


def write_summary(report: dict, path: Path) -> None:
    """Appends (GITHUB_STEP_SUMMARY is one file that every step of a job appends to)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        out.write(summary_markdown(report))
