"""Latency statistics and the confidence interval on a speedup, from raw samples."""

from __future__ import annotations

import dataclasses

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    n: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    iqr_pct: float  # interquartile range relative to the median: the spread the table shows
    round_medians_ms: list[float]  # one per benchmark round: drift between rounds shows here

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def summarize(rounds_ns: list[list[int]]) -> LatencyStats:
    """Statistics over every sample of every round."""
    samples_ms = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds_ns]) / 1e6
    q25, median, q75, p90 = np.percentile(samples_ms, [25, 50, 75, 90])
    return LatencyStats(
        n=int(samples_ms.size),
        median_ms=float(median),
        p90_ms=float(p90),
        mean_ms=float(samples_ms.mean()),
        min_ms=float(samples_ms.min()),
        max_ms=float(samples_ms.max()),
        std_ms=float(samples_ms.std()),
        iqr_pct=float((q75 - q25) / median * 100.0) if median > 0 else 0.0,
        round_medians_ms=[float(np.median(np.asarray(r, dtype=np.float64) / 1e6)) for r in rounds_ns],
    )


def _bootstrap_medians(rounds_ns: list[list[int]], rng: np.random.Generator) -> np.ndarray:
    """Medians of resamples drawn round by round, so each resample keeps the interleaved rounds' balance."""
    resampled = [
        np.asarray(r, dtype=np.float64)[rng.integers(0, len(r), size=(BOOTSTRAP_RESAMPLES, len(r)))]
        for r in rounds_ns
        if len(r)
    ]
    return np.median(np.concatenate(resampled, axis=1), axis=1)


def speedup_interval(
    baseline_ns: list[list[int]], candidate_ns: list[list[int]], seed: int = 0
) -> tuple[float, float, float]:
    """(speedup, low, high): baseline median / candidate median with a bootstrap 95% interval."""
    rng = np.random.default_rng(seed)
    base = _bootstrap_medians(baseline_ns, rng)
    cand = _bootstrap_medians(candidate_ns, rng)
    ratios = base / cand
    point = float(np.median(np.concatenate([np.asarray(r, float) for r in baseline_ns]))) / float(
        np.median(np.concatenate([np.asarray(r, float) for r in candidate_ns]))
    )
    tail = (1.0 - CONFIDENCE) / 2.0 * 100.0
    low, high = np.percentile(ratios, [tail, 100.0 - tail])
    return point, float(low), float(high)
