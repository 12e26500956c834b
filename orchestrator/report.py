"""The run's report: typed records, the JSON file, the table and the one-line verdict."""

from __future__ import annotations

import dataclasses
import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

from orchestrator.compare import Comparison
from orchestrator.formatting import ratio_with_interval, significant
from orchestrator.stats import LatencyStats

REPORT_VERSION = 1


@dataclasses.dataclass
class FailureRecord:
    category: str  # not applicable, unavailable, export, compile, runtime, timeout, crash, oom, accuracy
    message: str
    stage: str = ""  # plan, export, load, check, benchmark
    detail: str = ""
    runner_log: str = ""
    reproduce: str = ""  # the speedster-run command that tries this candidate's backend and precision again
    # The command that starts the runner it failed in by hand (the local process's command line, the container's
    # `docker run` line): to debug a crash in that runner alone.
    runner_command: str = ""


@dataclasses.dataclass
class CandidateResult:
    name: str
    backend: str
    precision: str
    variant: str
    format: str = ""
    device: str = ""
    is_original: bool = False
    status: str = "pending"  # ok, failed
    failure: FailureRecord | None = None
    compile_s: float | None = None
    first_inference_s: float | None = None
    latencies_ns: list[list[int]] = dataclasses.field(default_factory=list)  # raw samples, one list per round
    stable_rounds: int = 0
    stats: LatencyStats | None = None
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None
    comparison: Comparison | None = None
    details: dict[str, str] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    runner_description: str = ""  # where its runner ran: "local process pid 123", "docker container ...", "this process"
    image: str = ""  # the runner's container image, when it ran in one (docker sandbox)
    image_digest: str = ""  # that image's content digest (sha256:...)
    peak_rss_mb: float | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def fail(self, category: str, message: str, stage: str, **extra: str) -> None:
        self.status = "failed"
        self.failure = FailureRecord(category, message, stage, **extra)


@dataclasses.dataclass
class RunReport:
    config: dict
    environment: dict
    source: dict
    candidates: list[CandidateResult]
    winner: str | None = None
    verdict: str = ""
    tie_with: list[str] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    phases_s: dict[str, float] = dataclasses.field(default_factory=dict)
    save_error: str = ""  # --save was asked and failed
    # Python API: the user's module and the returned model timed side by side from the caller's process
    # (orchestrator.api.as_returned), the speedup the caller gets.
    as_returned: dict = dataclasses.field(default_factory=dict)
    report_version: int = REPORT_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, default=str) + "\n")


# Categories of candidates that never took part: one line each under the table, not a row each.
COLLAPSED_CATEGORIES = ("not applicable", "unavailable")
DEFAULT_WIDTH = 110  # when neither the terminal nor COLUMNS says


def _ms(value: float | None) -> str:
    return "" if value is None else significant(value)


def _speedup(result: CandidateResult) -> str:
    if result.speedup is None:
        return ""
    return ratio_with_interval(result.speedup, None if result.is_original else result.speedup_ci)


def _compared(result: CandidateResult) -> bool:
    return result.comparison is not None and result.comparison.drop != float("inf")


# (header, cell) in display order, and the order in which columns go when the table is too wide (last goes first).
_COLUMNS: list[tuple[str, Callable[[CandidateResult], str]]] = [
    ("candidate", lambda r: r.name),
    ("precision", lambda r: r.precision),
    ("compile s", lambda r: "" if r.compile_s is None else f"{r.compile_s:.1f}"),
    ("median ms", lambda r: _ms(r.stats.median_ms if r.stats else None)),
    ("p90 ms", lambda r: _ms(r.stats.p90_ms if r.stats else None)),
    ("spread", lambda r: "" if r.stats is None else f"{r.stats.iqr_pct:.0f}%"),
    ("speedup [95% CI]", _speedup),
    ("max abs err", lambda r: f"{max((o.max_abs for o in r.comparison.outputs), default=0.0):.1e}"
     if _compared(r) else ""),
    ("drop", lambda r: f"{r.comparison.drop:.1e}" if _compared(r) else ""),
]
_DROP_ORDER = ["max abs err", "precision", "compile s", "spread", "p90 ms", "drop"]


def terminal_width() -> int:
    """COLUMNS when set (as shells and CI runners export it), else the terminal's width, else DEFAULT_WIDTH."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def table(report: RunReport, width: int | None = None) -> str:
    """The table printed at the end of a run: the original first, then candidates by median latency; as many
    columns as fit `width` (default: the terminal's), failures numbered under it with their whole messages, and the
    backends that could not take part collapsed into one line per reason category."""
    width = width or terminal_width()
    shown = [r for r in report.candidates if not (r.failure and r.failure.category in COLLAPSED_CATEGORIES)]
    shown.sort(key=lambda r: (not r.is_original, r.stats is None, r.stats.median_ms if r.stats else 0.0, r.name))
    failures = [r for r in shown if r.failure is not None]
    status = {id(r): f"{r.failure.category} [{failures.index(r) + 1}]" for r in failures}
    for r in shown:
        if r.failure is None:
            status[id(r)] = ("WINNER" if r.name == report.winner else "ok") + (" (original)" if r.is_original else "")
    columns = list(_COLUMNS) + [("status", lambda r: status[id(r)])]
    text = _render(shown, columns)
    for header in _DROP_ORDER:
        if _widest_line(text) <= width:
            break
        columns = [c for c in columns if c[0] != header]
        text = _render(shown, columns)
    lines = [text] if shown else []
    for number, result in enumerate(failures, start=1):
        lines.append(textwrap.fill(f"[{number}] {result.name}: {result.failure.category}: {result.failure.message}",
                                   width=width, subsequent_indent="    "))
    for category in COLLAPSED_CATEGORIES:
        rows = [r for r in report.candidates if r.failure and r.failure.category == category]
        if rows:
            messages = {r.failure.message for r in rows}
            reason = f": {rows[0].failure.message}" if len(messages) == 1 else " (each reason: report.json, or " \
                                                                              "speedster-run backends)"
            lines.append(textwrap.fill(f"{category}: {', '.join(r.name for r in rows)}{reason}", width=width,
                                       subsequent_indent="    "))
    return "\n".join(lines)


def _render(rows: list[CandidateResult], columns: list[tuple[str, Callable[[CandidateResult], str]]]) -> str:
    return tabulate([[cell(r) for _, cell in columns] for r in rows], headers=[h for h, _ in columns],
                    tablefmt="simple", disable_numparse=True)


def _widest_line(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)
