"""A run starts only the runners that can help (the others are one "not applicable" line), infers the original once,
and numbers every step, the original's included, with benchmark rounds that say what is left."""

from __future__ import annotations

import json

from orchestrator.config import RunConfig, TimingConfig
from orchestrator.run import optimize
from orchestrator.runner_client import RunnerClient
from tests.conftest import FAST, cli

# Ruled out on a CPU for an ONNX file: no CUDA (tensorrt) or Neuron device, only torch formats (torch, xla, neuron),
# untuned TVM (not named, no --tune-budget).
RULED_OUT = {"tensorrt": "serves cuda only, not cpu",
             "torch": "compiles torch_export, torchscript; this run has onnx",
             "xla": "compiles torch_export; this run has onnx",
             "neuron": "serves neuron only, not cpu",
             "tvm": "untuned TVM on CPU is far slower than the other runtimes"}


def test_backends_that_cannot_help_start_no_runner_and_the_steps_are_numbered(mlp_model, tmp_path, fake_backend_env):
    report_path = tmp_path / "report.json"
    result = cli("--model", mlp_model, "--ignore-backends", "openvino,iree,onnxruntime-openvino", "--report",
                 report_path, *FAST)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert "starting the onnxruntime runner (" in err and "starting the fake runner (local" in err
    assert not any(f"starting the {backend} runner" in err for backend in RULED_OUT), err
    assert "not applicable, no runner started: " in err

    rows = {row["name"]: row for row in json.loads(report_path.read_text())["candidates"]}
    for backend, reason in RULED_OUT.items():
        failure = rows[backend]["failure"]
        assert failure["category"] == "not applicable" and failure["stage"] == "plan"
        assert failure["message"].startswith(reason), failure
    assert rows["fake/fp32-ok"]["status"] == "ok"
    assert [line for line in result.stdout.splitlines() if line.startswith("not applicable:")]

    # The original is step 1 of 2 like the rest; each benchmark turn says where the run is and what remains.
    assert "[1/2] onnxruntime/fp32 (original): computing reference outputs" in err
    assert "[2/2] fake/fp32-ok: compiling" in err
    assert "benchmark round 2/2: candidate 2/2" in err
    assert "benchmark round 1/2: candidate 1/2" in err and " s left" in err


def test_naming_tvm_brings_it_into_a_cpu_run_without_a_tuning_budget(mlp_model, tmp_path):
    result = cli("--model", mlp_model, "--backends", "onnxruntime,tvm", "--quiet", "--report", tmp_path / "r.json",
                 *FAST)
    rows = {row["backend"]: row for row in json.loads((tmp_path / "r.json").read_text())["candidates"]}
    assert result.returncode == 0, result.stderr
    assert (rows["tvm"].get("failure") or {}).get("category") != "not applicable", rows["tvm"]


def test_the_original_is_inferred_once(mlp_model, fake_backend_env, monkeypatch):
    """Its outputs are the references and its own accuracy check: each sample runs once through it, as through
    every other candidate."""
    calls: list[str] = []
    infer = RunnerClient.infer

    def counting(self, model_id, inputs, timeout_s):
        calls.append(model_id)
        return infer(self, model_id, inputs, timeout_s)

    monkeypatch.setattr(RunnerClient, "infer", counting)
    samples = 3
    report = optimize(RunConfig(model=mlp_model, backends=("fake",), samples=samples, sandbox="local",
                                timing=TimingConfig(time_budget_s=0.2, rounds=1, warmup_iterations=2)))
    original = next(row for row in report.candidates if row.is_original)
    assert original.status == "ok" and original.comparison.passed and original.comparison.drop == 0.0
    assert report.candidates[1].name == "fake/fp32-ok" and report.candidates[1].status == "ok"
    assert len(calls) == 2 * samples and len(set(calls)) == 2  # the original's samples, then the candidate's
