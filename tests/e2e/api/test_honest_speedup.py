"""The speedup optimize_model reports is the one its caller gets: the user's module is the baseline, run in the
caller's process, and the returned model is timed as the caller calls it (its call overhead included)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from orchestrator.api.baseline import NAME
from orchestrator.api.compilers import only
from speedster import optimize_model
from tests.e2e.api.test_optimize_torch import small_resnet

pytestmark = pytest.mark.slow
ROUNDS, CALLS = 6, 40
NOISE_MARGIN = 1.3  # on top of the spread of the test's own rounds: two measurements minutes apart on a shared host


def _median_s(call, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples))


def test_reported_speedup_is_what_the_caller_measures():
    model = small_resnet()
    torch.manual_seed(3)
    images = [torch.randn(1, 3, 64, 64) for _ in range(3)]
    optimized = optimize_model(model, [((x,),) for x in images], ignore_compilers=only("onnxruntime", "openvino"),
                               sandbox="local", measure_s=1.0, quiet=True)
    report = optimized.report
    original = next(r for r in report.candidates if r.is_original)
    assert original.name == NAME and "this process" in original.runner_description  # the user's module, not our export
    reported = optimized.summary["speedup"]
    assert reported == report.as_returned["speedup"]
    assert report.as_returned["call_overhead_ms"] == pytest.approx(
        report.as_returned["optimized_ms"] - report.as_returned["runner_ms"])

    # The caller's view, measured here: both called as a user calls them, in alternating rounds.
    x = images[0]
    torch.set_num_threads(report.config["effective_threads"])
    ratios = []
    with torch.inference_mode():
        for _ in range(3):
            model(x), optimized(x)  # warm-up
        for index in range(ROUNDS):
            if index % 2:
                fast, slow = _median_s(lambda: optimized(x), CALLS), _median_s(lambda: model(x), CALLS)
            else:
                slow, fast = _median_s(lambda: model(x), CALLS), _median_s(lambda: optimized(x), CALLS)
            ratios.append(slow / fast)
    low, high = min(ratios) / NOISE_MARGIN, max(ratios) * NOISE_MARGIN
    assert low <= reported <= high, (reported, ratios)
