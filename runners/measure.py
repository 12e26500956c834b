"""Latency measurement inside the runner: warm-up, then timed windows until the windows agree."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class TimingPlan:
    """Bounds of one measurement. The time budget is a hard stop once one window has run."""

    warmup_iterations: int = 5
    min_iterations: int = 10
    max_iterations: int = 1000
    max_time_s: float = 2.0
    window_iterations: int = 10
    stability_pct: float = 5.0
    stable_windows: int = 3


@dataclasses.dataclass(frozen=True)
class Timing:
    latencies_ns: list[int]
    stable: bool


def windows_agree(window_medians: list[float], count: int, tolerance_pct: float) -> bool:
    """True when the last `count` window medians lie within tolerance_pct of their minimum."""
    if count < 1 or len(window_medians) < count:
        return False
    recent = window_medians[-count:]
    low = min(recent)
    return low > 0 and (max(recent) - low) / low * 100.0 <= tolerance_pct


def measure(run_once: Callable[[], object], plan: TimingPlan, clock: Callable[[], int] = time.perf_counter_ns) -> Timing:
    """Times run_once (which must return only when its work is done) and returns the raw samples after warm-up."""
    for _ in range(plan.warmup_iterations):
        run_once()
    window_size = max(1, plan.window_iterations)
    samples: list[int] = []
    medians: list[float] = []
    stable = False
    started_ns = clock()
    while True:
        window = []
        for _ in range(window_size):
            begin = clock()
            run_once()
            window.append(clock() - begin)
        samples.extend(window)
        medians.append(statistics.median(window))
        stable = windows_agree(medians, plan.stable_windows, plan.stability_pct)
        elapsed_s = (clock() - started_ns) / 1e9
        if len(samples) >= plan.max_iterations or elapsed_s >= plan.max_time_s:
            break
        if stable and len(samples) >= plan.min_iterations:
            break
    return Timing(latencies_ns=samples, stable=stable)
