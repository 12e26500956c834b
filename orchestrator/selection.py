"""Picking the winner: the lowest median among accurate candidates, the cheaper one when they tie within noise."""

from __future__ import annotations

from orchestrator.formatting import ratio, significant
from orchestrator.planner import PRECISION_COST
from orchestrator.report import CandidateResult
from orchestrator.stats import speedup_interval


def cost(row: CandidateResult) -> tuple:
    """What it costs to adopt a candidate: the original costs nothing, then full precision, then compile time."""
    return (not row.is_original, PRECISION_COST.get(row.precision, 3), row.compile_s or 0.0)


def pick_winner(rows: list[CandidateResult], original: CandidateResult,
                original_may_win: bool = True) -> tuple[str | None, list[str], str]:
    """(winner name, names tied with the fastest, one-line verdict)."""
    accurate = [r for r in rows if r.status == "ok" and r.stats is not None and (original_may_win or not r.is_original)]
    if not accurate:
        reasons = "; ".join(f"{r.name}: {r.failure.category}" for r in rows if r.failure)[:300]
        return None, [], f"No candidate qualified ({reasons or 'nothing could run'})."
    fastest = min(accurate, key=lambda r: r.stats.median_ms)
    tied = [fastest]
    for row in accurate:
        if row is fastest:
            continue
        # other / fastest with its interval: when the interval reaches 1.0 the two are not distinguishable.
        _, low, _ = speedup_interval(row.latencies_ns, fastest.latencies_ns)
        if low <= 1.0:
            tied.append(row)
    winner = min(tied, key=cost)
    verdict = _verdict(winner, original)
    if len(tied) > 1:
        others = ", ".join(r.name for r in tied if r is not winner)
        verdict += f" Within the noise of {others}; picked the cheaper to adopt."
    return winner.name, [r.name for r in tied if r is not winner], verdict


def _verdict(winner: CandidateResult, original: CandidateResult) -> str:
    if winner.is_original:
        return (f"Winner: the original ({winner.name}, median {significant(winner.stats.median_ms)} ms): "
                "no candidate was measurably faster.")
    low, high = winner.speedup_ci or (winner.speedup, winner.speedup)
    drop = f", drop {winner.comparison.drop:.1e}" if winner.comparison else ""
    # Below 1x only when the original was kept out of the running (the Python API must return a compiled model).
    pace = "faster than" if winner.speedup >= 1 else "the speed of"
    return (f"Winner: {winner.name}, {ratio(winner.speedup)} {pace} the original (95% CI {significant(low)}-"
            f"{significant(high)}): median {significant(winner.stats.median_ms)} ms vs "
            f"{significant(original.stats.median_ms)} ms{drop}.")
