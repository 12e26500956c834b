"""The run's report: typed records, the JSON file, the table and the one-line verdict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tabulate import tabulate

from orchestrator.compare import Comparison
from orchestrator.stats import LatencyStats

REPORT_VERSION = 1


@dataclasses.dataclass
class FailureRecord:
    category: str  # unavailable, export, compile, runtime, timeout, crash, oom, accuracy
    message: str
    stage: str = ""  # plan, export, load, check, benchmark
    detail: str = ""
    runner_log: str = ""
    reproduce: str = ""  # a command that reproduces it


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
    runner: str = ""
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


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _speedup(result: CandidateResult) -> str:
    if result.speedup is None:
        return ""
    if result.is_original or result.speedup_ci is None:
        return f"{result.speedup:.2f}x"
    low, high = result.speedup_ci
    return f"{result.speedup:.2f}x [{low:.2f}-{high:.2f}]"


def _status(result: CandidateResult, winner: str | None) -> str:
    if result.failure is not None:
        return f"{result.failure.category}: {result.failure.message}"[:70]
    mark = "ok"
    if result.name == winner:
        mark = "WINNER"
    return mark + (" (original)" if result.is_original else "")


def table(report: RunReport) -> str:
    """The table printed at the end of a run: original first, then candidates by median latency."""
    rows = []
    ordered = sorted(
        report.candidates,
        key=lambda r: (not r.is_original, r.stats is None, r.stats.median_ms if r.stats else 0.0, r.name),
    )
    for result in ordered:
        stats = result.stats
        rows.append([
            result.name,
            result.precision,
            "" if result.compile_s is None else f"{result.compile_s:.1f}",
            _ms(stats.median_ms if stats else None),
            _ms(stats.p90_ms if stats else None),
            "" if stats is None else f"{stats.iqr_pct:.1f}%",
            _speedup(result),
            "" if result.comparison is None or result.comparison.drop == float("inf")
            else f"{max((o.max_abs for o in result.comparison.outputs), default=0.0):.2e}",
            "" if result.comparison is None or result.comparison.drop == float("inf")
            else f"{result.comparison.drop:.1e}",
            _status(result, report.winner),
        ])
    headers = ["candidate", "precision", "compile s", "median ms", "p90 ms", "spread", "speedup [95% CI]",
               "max abs err", "drop", "status"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)
