"""Orchestrator logic without runners: comparison, statistics, measurement windows, planning, parsing, selection."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.compare import compare, tolerance_for
from orchestrator.config import RunConfig, parse_device
from orchestrator.errors import UserError
from orchestrator.inputs import concrete_shapes, parse_shape_override, random_samples
from orchestrator.planner import plan, wanted_precisions
from orchestrator.report import CandidateResult
from orchestrator.selection import pick_winner
from orchestrator.stats import speedup_interval, summarize
from speedster_run.shared.types import TensorInfo
from speedster_run.shared.measure import TimingPlan, measure, windows_agree
from speedster_run.runner.v1 import runner_pb2 as pb


def test_compare_passes_close_outputs_and_rejects_drift():
    ref = [{"y": np.linspace(1, 2, 100, dtype=np.float32)}]
    close = [{"y": ref[0]["y"] * (1 + 1e-6)}]
    far = [{"y": ref[0]["y"] + 0.5}]
    assert compare(ref, close, tolerance_for("fp32", None)).passed
    result = compare(ref, far, tolerance_for("fp32", None))
    assert not result.passed and "exceeds tolerance" in result.problem
    assert result.outputs[0].max_abs == pytest.approx(0.5, rel=1e-6)


def test_compare_reports_shape_nan_and_count_problems():
    ref = [{"y": np.ones((2, 3), np.float32)}]
    assert "shape" in compare(ref, [{"y": np.ones((3, 2), np.float32)}], 1.0).problem
    assert "NaN" in compare(ref, [{"y": np.full((2, 3), np.nan, np.float32)}], 1.0).problem
    assert "outputs" in compare(ref, [{"a": ref[0]["y"], "b": ref[0]["y"]}], 1.0).problem


def test_compare_pairs_renamed_outputs_by_position_and_counts_integer_mismatches():
    ref = [{"logits": np.arange(4, dtype=np.int64)}]
    renamed = [{"output_0": np.array([0, 1, 2, 9], dtype=np.int64)}]
    result = compare(ref, renamed, 0.3)
    assert result.passed and result.drop == pytest.approx(0.25)


def test_tolerances_depend_on_precision_unless_the_user_sets_one():
    assert tolerance_for("fp32", None) < tolerance_for("fp16", None) < tolerance_for("int8", None)
    assert tolerance_for("int8", 2.0) == 2.0


def test_stats_and_speedup_interval():
    rng = np.random.default_rng(1)
    slow = [list((10e6 + rng.normal(0, 1e5, 200)).astype(np.int64)) for _ in range(3)]
    fast = [list((5e6 + rng.normal(0, 1e5, 200)).astype(np.int64)) for _ in range(3)]
    stats = summarize(fast)
    assert stats.n == 600 and stats.median_ms == pytest.approx(5.0, rel=0.01)
    assert len(stats.round_medians_ms) == 3 and stats.p90_ms > stats.median_ms
    point, low, high = speedup_interval(slow, fast)
    assert point == pytest.approx(2.0, rel=0.02) and low < point < high and high - low < 0.1


def test_measure_stops_on_stable_windows_and_respects_bounds():
    ticks = iter(range(0, 10**12, 1000))
    timing = measure(lambda: None, TimingPlan(warmup_iterations=2, min_iterations=30, window_iterations=10,
                                              stable_windows=3, max_time_s=100), clock=lambda: next(ticks))
    assert timing.stable and len(timing.latencies_ns) == 30
    capped = measure(lambda: None, TimingPlan(warmup_iterations=0, max_iterations=20, window_iterations=10,
                                              stable_windows=50, max_time_s=100))
    assert len(capped.latencies_ns) == 20 and not capped.stable
    assert windows_agree([10.0, 10.2, 10.1], 3, 5.0) and not windows_agree([10.0, 12.0, 10.1], 3, 5.0)


def test_parse_device_and_shapes():
    assert parse_device("cuda") == "cuda:0" and parse_device("GPU:1") == "gpu:1" and parse_device("cpu") == "cpu"
    assert parse_device("tpu") == "tpu:0" and parse_device("neuron:2") == "neuron:2"
    for bad in ("quantum", "cuda:x", "cpu:0"):
        with pytest.raises(ValueError):
            parse_device(bad)
    assert parse_shape_override("ids=1x128:int64") == ("ids", ((1, 128), "int64"))
    for bad in ("x", "x=1xa", "x=1x2:complex"):
        with pytest.raises(UserError):
            parse_shape_override(bad)


def test_symbolic_dims_need_shapes_except_the_batch():
    inputs = [TensorInfo("ids", "int64", (None, None), ("batch", "sequence"))]
    with pytest.raises(UserError, match="--input-shape ids=1x1"):
        concrete_shapes(inputs, {})
    assert concrete_shapes(inputs, {"ids": ((2, 16), None)}) == {"ids": ((2, 16), "int64")}
    with pytest.raises(UserError, match="does not fit"):
        concrete_shapes([TensorInfo("x", "float32", (None, 3))], {"x": ((1, 4), None)})
    samples = random_samples({"ids": ((2, 16), "int64"), "m": ((2,), "bool")}, 3, seed=0)
    assert len(samples) == 3 and samples[0]["ids"].dtype == np.int64 and samples[0]["m"].dtype == bool
    again = random_samples({"ids": ((2, 16), "int64"), "m": ((2,), "bool")}, 3, seed=0)
    assert np.array_equal(samples[2]["ids"], again[2]["ids"])


def _description(name, offers, devices=("cpu",), available=True):
    return pb.DescribeResponse(backend=name, available=available, devices=list(devices), unavailable_reason="missing",
                               offers=[pb.Offer(precision=p, variant=v, devices=["cpu"], formats=["onnx"])
                                       for p, v in offers])


def test_plan_gates_reduced_precision_on_the_threshold():
    descriptions = {"a": _description("a", [("fp32", "default"), ("int8", "static")]),
                    "b": _description("b", [], available=False)}
    config = RunConfig(model="m.onnx")
    assert wanted_precisions(config) == ("fp32",)
    candidates, skipped = plan(descriptions, {"onnx": "m.onnx"}, config)
    assert [c.name for c in candidates] == ["a/fp32"]
    assert skipped[0].backend == "b" and skipped[0].category == "unavailable"
    candidates, _ = plan(descriptions, {"onnx": "m.onnx"}, RunConfig(model="m.onnx", metric_drop_ths=0.1))
    assert [c.name for c in candidates] == ["a/fp32", "a/int8-static"]
    _, skipped = plan(descriptions, {"torchscript": "m.pt"}, config)
    assert skipped[0].category == "export"


def test_tuned_variants_only_with_a_budget_and_exclusions_by_variant():
    descriptions = {"a": _description("a", [("fp32", "default"), ("fp32", "tuned"), ("int8", "static")])}
    names = lambda config: [c.name for c in plan(descriptions, {"onnx": "m.onnx"}, config)[0]]  # noqa: E731
    assert names(RunConfig(model="m.onnx")) == ["a/fp32"]
    tuning = RunConfig(model="m.onnx", tune_budget_s=30, backend_options={"a": {"tune_trials": "8"}})
    assert names(tuning) == ["a/fp32", "a/fp32-tuned"]
    assert tuning.load_options("a", "tuned") == {"tune_trials": "8", "tune_budget_s": "30"}
    assert tuning.load_options("a", "default") == {"tune_trials": "8"} and tuning.load_options("b", "tuned") == {
        "tune_budget_s": "30"}
    assert names(RunConfig(model="m.onnx", metric_drop_ths=1, exclude=(("a", "static"),))) == ["a/fp32"]


def _row(name, median_ms, spread_ms, precision="fp32", original=False, seed=0):
    rng = np.random.default_rng(seed)
    row = CandidateResult(name=name, backend=name, precision=precision, variant="default", is_original=original,
                          status="ok")
    row.latencies_ns = [list((median_ms * 1e6 + rng.normal(0, spread_ms * 1e6, 100)).astype(np.int64))
                        for _ in range(3)]
    row.stats = summarize(row.latencies_ns)
    row.speedup, row.speedup_ci = 1.0, (1.0, 1.0)
    return row


def test_winner_is_fastest_and_a_tie_prefers_the_cheaper():
    original = _row("orig", 10.0, 0.1, original=True)
    fast = _row("fast", 5.0, 0.1, seed=1)
    winner, tied, verdict = pick_winner([original, fast], original)
    assert winner == "fast" and tied == [] and verdict.startswith("Winner: fast")
    int8 = _row("int8", 4.99, 0.5, precision="int8", seed=2)
    fp32 = _row("fp32", 5.0, 0.5, seed=3)
    winner, tied, verdict = pick_winner([original, int8, fp32], original)
    assert winner == "fp32" and tied == ["int8"] and "Within the noise" in verdict
    failed = CandidateResult(name="x", backend="x", precision="fp32", variant="default")
    failed.fail("crash", "boom", "load")
    assert pick_winner([failed], failed)[0] is None


def test_accelerator_names_map_to_what_each_backend_calls_them():
    from orchestrator.planner import device_for

    assert device_for("gpu:1", {"cpu", "cuda"}) == "cuda:1"
    assert device_for("cuda:0", {"cpu", "gpu"}) == "gpu:0"
    assert device_for("cuda:0", {"cpu"}) is None
    assert device_for("cpu", {"cpu", "cuda"}) == "cpu"
    gpu_only = {"g": pb.DescribeResponse(backend="g", available=True, devices=["cpu", "cuda:0"], offers=[
        pb.Offer(precision="fp16", variant="default", devices=["cuda"], formats=["onnx"])])}
    candidates, _ = plan(gpu_only, {"onnx": "m.onnx"}, RunConfig(model="m.onnx", device="gpu:0", metric_drop_ths=1))
    assert [(c.name, c.device) for c in candidates] == [("g/fp16", "cuda:0")]
    _, skipped = plan(gpu_only, {"onnx": "m.onnx"}, RunConfig(model="m.onnx", device="cuda:1"))
    assert "not seen by the runner" in skipped[0].reason


def test_random_inputs_suit_transformer_input_names():
    from orchestrator.inputs import random_samples

    shapes = {"input_ids": ((1, 8), "int64"), "attention_mask": ((1, 8), "int64"), "token_type_ids": ((1, 8), "int64"),
              "x": ((2, 3), "float32")}
    sample = random_samples(shapes, 1, seed=0)[0]
    assert sample["attention_mask"].tolist() == [[1] * 8] and sample["token_type_ids"].tolist() == [[0] * 8]
    assert 0 <= sample["input_ids"].min() and sample["input_ids"].max() < 16 and sample["x"].dtype == np.float32
