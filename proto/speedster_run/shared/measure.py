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

    @classmethod
    def from_request(cls, request) -> "TimingPlan":
        """The plan a BenchmarkRequest asks for; a field it leaves unset (zero) takes the default."""
        default = cls()
        return cls(
            warmup_iterations=max(0, request.warmup_iterations),
            min_iterations=max(1, request.min_iterations),
            max_iterations=max(1, request.max_iterations or default.max_iterations),
            max_time_s=request.max_time_s if request.max_time_s > 0 else default.max_time_s,
            window_iterations=max(1, request.window_iterations or default.window_iterations),
            stability_pct=request.stability_pct if request.stability_pct > 0 else default.stability_pct,
            stable_windows=max(1, request.stable_windows or default.stable_windows),
        )


@dataclasses.dataclass(frozen=True)
class Timing:
    latencies_ns: list[int]
    stable: bool
    stopped: bool = False  # stop() said so before the plan was done: the samples are partial


def windows_agree(window_medians: list[float], count: int, tolerance_pct: float) -> bool:
    """True when the last `count` window medians lie within tolerance_pct of their minimum."""
    if count < 1 or len(window_medians) < count:
        return False
    recent = window_medians[-count:]
    low = min(recent)
    return low > 0 and (max(recent) - low) / low * 100.0 <= tolerance_pct


def measure(run_once: Callable[[], object], plan: TimingPlan, clock: Callable[[], int] = time.perf_counter_ns,
            stop: Callable[[], bool] = lambda: False) -> Timing:
    """Times run_once (which must return only when its work is done) and returns the raw samples after warm-up.
    stop() is asked before every run, outside the clock: True ends the measurement at once (the caller has gone)."""
    for _ in range(plan.warmup_iterations):
        if stop():
            return Timing(latencies_ns=[], stable=False, stopped=True)
        run_once()
    window_size = max(1, plan.window_iterations)
    samples: list[int] = []
    medians: list[float] = []
    stable = False
    started_ns = clock()
    while True:
        window = []
        for _ in range(window_size):
            if stop():
                return Timing(latencies_ns=samples + window, stable=False, stopped=True)
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
