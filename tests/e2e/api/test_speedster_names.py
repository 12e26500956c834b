"""Every compiler and compressor name Speedster accepted is accepted here, and means what it meant (or nothing)."""

from __future__ import annotations

import pytest

from orchestrator.api import compilers
from runners import registry

# ../shared/speedster-docs/advanced-options.md, "Select specific compilers/compressors".
DOCUMENTED = ["deepsparse", "tensor_rt", "torch_tensor_rt", "onnx_tensor_rt", "torchscript", "onnxruntime", "tflite",
              "tvm", "onnx_tvm", "torch_tvm", "bladedisc", "openvino", "intel_neural_compressor", "torch_xla",
              "torch_neuron"]
# Speedster's ModelCompiler enum.
ENUM = ["tensor_rt", "onnx_tensor_rt", "torch_tensor_rt", "openvino", "tvm", "torch_tvm", "onnx_tvm", "onnxruntime",
        "deepsparse", "torchscript", "xla", "tflite", "bladedisc", "intel_neural_compressor", "torch_neuron",
        "torch_xla", "torch_dynamo", "faster_transformer"]
COMPRESSORS = ["sparseml", "intel_pruning"]
# What the README's "Coming from Speedster" says changes nothing here.
NOTHING = {"torch_tvm", "deepsparse", "tflite", "bladedisc", "intel_neural_compressor", "faster_transformer"}


@pytest.mark.parametrize("name", sorted(set(DOCUMENTED + ENUM)))
def test_every_speedster_compiler_name_is_accepted(name):
    excluded = compilers.excluded([name])
    assert (excluded == ()) == (name in NOTHING)
    known = registry.names()
    assert all(backend in known for backend, _ in excluded), excluded


@pytest.mark.parametrize("name", COMPRESSORS)
def test_every_speedster_compressor_name_is_accepted_and_changes_nothing(name):
    assert compilers.excluded([], [name]) == ()


@pytest.mark.parametrize("name, means", [
    ("onnx_tvm", {("tvm", None)}),  # TVM compiles from ONNX here
    ("tvm", {("tvm", None)}),
    ("xla", {("xla", None)}),
    ("torch_xla", {("xla", None)}),
    ("torch_dynamo", {("torch", "inductor")}),
    ("tensor_rt", {("tensorrt", None), ("onnxruntime", "tensorrt")}),
])
def test_names_map_to_what_they_meant(name, means):
    assert set(compilers.excluded([name])) == means


def test_all_of_them_at_once_and_an_unknown_one():
    assert compilers.excluded(DOCUMENTED + ENUM, COMPRESSORS)
    with pytest.raises(ValueError, match="ignore_compilers: unknown name 'onnx_tvmm'; valid names: .*onnx_tvm"):
        compilers.excluded(["onnx_tvmm"])


def test_the_readme_names_exactly_the_names_that_change_nothing():
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("- **ignore_compilers**"):readme.index("- **dynamic_info**")]
    nothing = section[section.index("change nothing"):].split(".")[0]
    assert {name for name in compilers.COMPILERS if f"`{name}`" in nothing} == NOTHING
