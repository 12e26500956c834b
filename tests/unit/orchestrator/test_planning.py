"""Planning from the catalog before anything starts: which backends cannot help the run (its device kind, its model
formats, untuned TVM on a CPU), and why, in the words of the report's "not applicable" line."""

from __future__ import annotations

import pytest

from orchestrator import planner
from orchestrator.config import RunConfig


@pytest.mark.parametrize("backend, device, source_format, reason", [
    ("tensorrt", "cpu", "onnx", "serves cuda only, not cpu"),
    ("neuron", "cpu", "torch_export", "serves neuron only, not cpu"),
    ("torch", "cpu", "onnx", "compiles torch_export, torchscript; this run has onnx"),
    ("xla", "cpu", "onnx", "compiles torch_export; this run has onnx"),
    ("onnxruntime", "tpu:0", "onnx", "serves cpu, cuda only, not tpu"),
    ("tvm", "cpu", "onnx", planner.UNTUNED_TVM_ON_CPU),
])
def test_a_backend_that_cannot_help_says_why(mlp_model, backend, device, source_format, reason):
    config = RunConfig(model=mlp_model, device=device)
    assert planner.not_applicable(backend, config, planner.run_formats(source_format)) == reason


@pytest.mark.parametrize("backend, device, source_format", [
    ("onnxruntime", "cpu", "onnx"),
    ("openvino", "gpu:0", "onnx"),
    ("onnxruntime", "gpu:0", "onnx"),  # gpu:N and cuda:N name the same accelerator
    ("tensorrt", "cuda:0", "onnx"),
    ("xla", "cpu", "torch_export"),  # the catalog says XLA serves a CPU (for checks)
    ("openvino", "cpu", "torchscript"),  # a torch artifact is exported to ONNX as well
    ("tvm", "cuda:0", "onnx"),  # untuned TVM is ruled out on a CPU only
    ("fake", "cpu", "onnx"),  # a plug-in the catalog does not know: its runner's Describe says
])
def test_a_backend_that_may_help_is_started(mlp_model, backend, device, source_format):
    config = RunConfig(model=mlp_model, device=device)
    assert planner.not_applicable(backend, config, planner.run_formats(source_format)) is None


def test_untuned_tvm_on_a_cpu_only_when_named_or_given_a_tuning_budget(mlp_model):
    formats = planner.run_formats("onnx")
    assert planner.not_applicable("tvm", RunConfig(model=mlp_model), formats) == planner.UNTUNED_TVM_ON_CPU
    assert planner.not_applicable("tvm", RunConfig(model=mlp_model, backends=("onnxruntime", "tvm")), formats) is None
    assert planner.not_applicable("tvm", RunConfig(model=mlp_model, tune_budget_s=60.0), formats) is None
    assert "--tune-budget SECONDS" in planner.UNTUNED_TVM_ON_CPU and "--backends tvm" in planner.UNTUNED_TVM_ON_CPU


def test_a_torch_artifact_brings_onnx_along():
    assert planner.run_formats("onnx") == ("onnx",)
    assert planner.run_formats("torch_export") == ("torch_export", "onnx")
