"""Latency measurement: warm-up, then timed windows until the windows agree.

The defaults below are the only ones: the runner fills a BenchmarkRequest's unset fields with them, and the
orchestrator's timing configuration starts from them.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable


WARMUP_ITERATIONS = 5  # untimed runs first: caches, lazy initialisation, clock ramp-up
MIN_ITERATIONS = 10
MAX_ITERATIONS = 1000
MAX_TIME_S = 2.0  # one measurement's time budget
WINDOW_ITERATIONS = 10  # runs per window; a window's median is compared with the previous ones'
STABILITY_PCT = 5.0  # windows agree when their medians lie within this of the lowest
STABLE_WINDOWS = 3  # how many last windows must agree


@dataclasses.dataclass(frozen=True)
class TimingPlan:
    """Bounds of one measurement. The time budget is a hard stop once one window has run."""

    warmup_iterations: int = WARMUP_ITERATIONS
    min_iterations: int = MIN_ITERATIONS
    max_iterations: int = MAX_ITERATIONS
    max_time_s: float = MAX_TIME_S
    window_iterations: int = WINDOW_ITERATIONS
    stability_pct: float = STABILITY_PCT
    stable_windows: int = STABLE_WINDOWS

    @classmethod
    def from_request(cls, request) -> "TimingPlan":
        """The plan a BenchmarkRequest asks for; a field it leaves unset (zero) takes the default, except the
        warm-up and minimum counts, where zero is a real request (none, and one)."""
        return cls(
            warmup_iterations=max(0, request.warmup_iterations),
            min_iterations=max(1, request.min_iterations),
            max_iterations=max(1, request.max_iterations or MAX_ITERATIONS),
            max_time_s=request.max_time_s if request.max_time_s > 0 else MAX_TIME_S,
            window_iterations=max(1, request.window_iterations or WINDOW_ITERATIONS),
            stability_pct=request.stability_pct if request.stability_pct > 0 else STABILITY_PCT,
            stable_windows=max(1, request.stable_windows or STABLE_WINDOWS),
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
