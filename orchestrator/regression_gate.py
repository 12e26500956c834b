"""`speedster-run compare BASE.json NEW.json`: two runs side by side, and the gate a pipeline puts after each model
change.

The ratio NEW/BASE of each candidate's median latency comes with a bootstrap 95% interval drawn from both runs' raw
samples, resampling whole rounds first and then the samples inside each (report.json keeps them round by round): the
two runs were not interleaved, so how much a run's rounds drift apart is part of the noise between them. The gate fails (exit 1) only when the new winner is slower than the
base winner by more than the threshold *beyond the noise*: the interval's lower bound must itself be past the
threshold. A pair whose medians differ by more than the threshold but whose interval reaches back under it passes
(said so in the verdict). The interval knows each run's own noise; the noise between two runs on a shared machine
comes on top, and the threshold is the allowance for it (docs/benchmarks.md measures it on our machines).
Reports that cannot be read, are not speedster-run reports, or measured different devices cannot be compared (exit
2). A different model (sha256) or environment is expected after a model change: it is shown, not refused.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from orchestrator.errors import UserError
from orchestrator.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE

EXIT_OK, EXIT_REGRESSION, EXIT_INCOMPARABLE = 0, 1, 2
DEFAULT_MAX_REGRESSION = 0.05


class IncomparableReports(UserError):
    """The two reports cannot be compared; the message says why."""


@dataclasses.dataclass(frozen=True)
class RatioRow:
    name: str
    base_ms: float | None
    new_ms: float | None
    ratio: float | None = None  # new median / base median: above 1 is slower
    low: float | None = None
    high: float | None = None


@dataclasses.dataclass
class Comparison:
    rows: list[RatioRow]
    winner: RatioRow | None  # the new winner against the base winner
    notes: list[str]
    regression: bool
    verdict: str


def load_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise IncomparableReports(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise IncomparableReports(f"{path}: not a readable JSON report ({error})") from None
    if not isinstance(report, dict) or not isinstance(report.get("candidates"), list) \
            or "report_version" not in report:
        raise IncomparableReports(f"{path}: not a speedster-run report (written by --report)")
    return report


def _machine(report: dict) -> dict:
    """What makes two hosts comparable: the processor and the cores the runs could use, not the host name (a
    container's is its id, new every run)."""
    host = report.get("environment", {}).get("host", {})
    return {key: host.get(key) for key in ("cpu", "cpu_count", "cpus_allowed", "platform") if key in host}


def _samples(candidate: dict | None) -> list[list[int]]:
    return [r for r in (candidate or {}).get("latencies_ns") or [] if r]


def _median_ms(candidate: dict | None) -> float | None:
    stats = (candidate or {}).get("stats")
    return stats["median_ms"] if stats else None


def _round_bootstrap_medians(rounds: list[list[int]], rng: np.random.Generator) -> np.ndarray:
    """Medians of resamples that draw rounds with replacement, then samples with replacement inside each drawn
    round (a two-level bootstrap: both the drift between rounds and the spread inside them widen the interval)."""
    arrays = [np.asarray(r, dtype=np.float64) for r in rounds]
    size = min(sum(map(len, arrays)), 4096)  # samples per resample: enough for a stable median, bounded in memory
    chosen = rng.integers(0, len(arrays), size=(BOOTSTRAP_RESAMPLES, len(arrays)))
    medians = np.empty(BOOTSTRAP_RESAMPLES)
    per_round = max(1, size // len(arrays))
    for index, picks in enumerate(chosen):
        drawn = [arrays[p][rng.integers(0, len(arrays[p]), size=per_round)] for p in picks]
        medians[index] = np.median(np.concatenate(drawn))
    return medians


def ratio_row(name: str, base: dict | None, new: dict | None, seed: int = 0) -> RatioRow:
    row = RatioRow(name, _median_ms(base), _median_ms(new))
    base_rounds, new_rounds = _samples(base), _samples(new)
    if not (base_rounds and new_rounds):
        return row
    rng = np.random.default_rng(seed)
    ratios = _round_bootstrap_medians(new_rounds, rng) / _round_bootstrap_medians(base_rounds, rng)
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    point = float(np.median(np.concatenate(new_rounds)) / np.median(np.concatenate(base_rounds)))
    return dataclasses.replace(row, ratio=point, low=float(low), high=float(high))


def compare_reports(base: dict, new: dict, max_regression: float = DEFAULT_MAX_REGRESSION) -> Comparison:
    base_device, new_device = base.get("config", {}).get("device"), new.get("config", {}).get("device")
    if base_device != new_device:
        raise IncomparableReports(f"the runs measured different devices ({base_device} and {new_device})")
    if base.get("report_version") != new.get("report_version"):
        raise IncomparableReports(f"report versions differ ({base.get('report_version')} and "
                                  f"{new.get('report_version')}): compare reports of one speedster-run version")
    if not base.get("winner"):
        raise IncomparableReports("the base run has no winner to compare against")
    notes = []
    if base.get("source", {}).get("sha256") != new.get("source", {}).get("sha256"):
        notes.append("the model changed (sha256 differs)")
    base_host, new_host = _machine(base), _machine(new)
    if base_host != new_host:
        differ = ", ".join(f"{key}: {base_host.get(key)} vs {new_host.get(key)}"
                           for key in sorted(set(base_host) | set(new_host)) if base_host.get(key) != new_host.get(key))
        notes.append(f"the machines differ ({differ})")
    if base.get("environment", {}).get("backends") != new.get("environment", {}).get("backends"):
        notes.append("the backends' versions differ")

    by_name = {c["name"]: c for c in base["candidates"]}
    new_by_name = {c["name"]: c for c in new["candidates"]}
    rows = [ratio_row(name, by_name.get(name), new_by_name.get(name))
            for name in list(by_name) + [n for n in new_by_name if n not in by_name]]
    if not new.get("winner"):
        return Comparison(rows, None, notes, True, "REGRESSION: the new run has no winner (no candidate qualified)")
    winner = ratio_row(f"winner: {base['winner']} -> {new['winner']}", by_name[base["winner"]],
                       new_by_name[new["winner"]])
    if winner.ratio is None:
        raise IncomparableReports("a winner has no latency samples (a report written without them)")
    slower = winner.ratio > 1.0 + max_regression
    regression = winner.low > 1.0 + max_regression
    change = f"{(winner.ratio - 1.0) * 100:+.1f}% [{(winner.low - 1) * 100:+.1f}% to {(winner.high - 1) * 100:+.1f}%]"
    if regression:
        verdict = f"REGRESSION: the winner is {change} slower, beyond the {max_regression:.0%} threshold and the noise"
    elif slower:
        verdict = f"OK: the winner changed by {change}, past the {max_regression:.0%} threshold but within the noise"
    else:
        verdict = f"OK: the winner changed by {change} (threshold {max_regression:.0%})"
    return Comparison(rows, winner, notes, regression, verdict)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _ratio(row: RatioRow) -> str:
    return "" if row.ratio is None else f"{row.ratio:.3f} [{row.low:.3f}-{row.high:.3f}]"


def render(comparison: Comparison) -> str:
    from tabulate import tabulate

    rows = [[r.name, _ms(r.base_ms), _ms(r.new_ms), _ratio(r)] for r in comparison.rows]
    if comparison.winner is not None:
        w = comparison.winner
        rows.append([w.name, _ms(w.base_ms), _ms(w.new_ms), _ratio(w)])
    text = tabulate(rows, headers=["candidate", "base ms", "new ms", "new/base [95% CI]"], tablefmt="simple",
                    disable_numparse=True)
    notes = "".join(f"note: {note}\n" for note in comparison.notes)
    return f"{text}\n\n{notes}{comparison.verdict}\n"
