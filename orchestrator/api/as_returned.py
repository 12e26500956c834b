"""The speedup the caller gets: the user's module and the model optimize_model returns, both called from this
process as the user will call them (tensors in, the original's output structure out), measured side by side in
interleaved rounds. The returned model's call overhead (conversions, output structure, a runner's gRPC) counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from orchestrator.config import TimingConfig
from orchestrator.in_process import pinned
from orchestrator.stats import speedup_interval
from speedster_run.shared.measure import TimingPlan, measure


@dataclasses.dataclass(frozen=True)
class AsReturned:
    original_ms: float  # median, the user's module called here
    optimized_ms: float  # median, the returned model called here
    speedup: float
    speedup_ci: tuple[float, float]
    runner_ms: float  # the winner's median as its runner measured it
    original_ns: list[list[int]]  # raw samples, one list per round
    optimized_ns: list[list[int]]

    @property
    def call_overhead_ms(self) -> float:
        """What calling the returned model costs beyond the compiled model's own run."""
        return self.optimized_ms - self.runner_ms

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"call_overhead_ms": self.call_overhead_ms}


def _median_ms(rounds_ns: list[list[int]]) -> float:
    return float(np.median(np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds_ns]))) / 1e6


def measure_as_returned(original: Callable[[], Any], optimized: Callable[[], Any], timing: TimingConfig,
                        threads: int, runner_ms: float, seed: int = 0) -> AsReturned:
    """Times both calls in alternating rounds, with the run's timing plan, on the cores the runners had."""
    rounds = max(2, timing.rounds)
    plan = TimingPlan(warmup_iterations=timing.warmup_iterations, min_iterations=timing.window_iterations,
                      max_iterations=100_000, max_time_s=timing.time_budget_s / rounds,
                      window_iterations=timing.window_iterations, stability_pct=timing.stability_pct,
                      stable_windows=timing.stable_windows)
    samples: dict[str, list[list[int]]] = {"original": [], "optimized": []}
    calls = {"original": original, "optimized": optimized}
    with pinned(threads):
        for index in range(rounds):
            order = ("original", "optimized") if index % 2 == 0 else ("optimized", "original")
            for key in order:
                samples[key].append(measure(calls[key], plan).latencies_ns)
    speedup, low, high = speedup_interval(samples["original"], samples["optimized"], seed=seed)
    return AsReturned(_median_ms(samples["original"]), _median_ms(samples["optimized"]), speedup, (low, high),
                      runner_ms, samples["original"], samples["optimized"])
