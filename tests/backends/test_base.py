"""The lifecycle every backend inherits (runners/backends/base.py): requests checked against the probe's offers,
library exceptions turned into categorised one-line failures, out of memory recognised in one place. The checks are
pure functions tested on plain data; the lifecycle runs on the real ONNX Runtime backend and on every registered one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runners import registry
from runners.backends.base import Availability, LoadSpec, Offer, refusal
from runners.backends.onnxruntime import OnnxRuntimeBackend
from speedster_run.shared.errors import CandidateError, as_candidate_error, one_line
from tests.conftest import mlp_onnx

# Bytes no allocator can map (2**62, past any 48-bit address space): ONNX Runtime fails at once, whatever the host.
UNMAPPABLE_FLOATS = 2**60
OFFERS = (
    Offer("fp32", "default", ("cpu", "cuda"), ("onnx",)),
    Offer("int8", "static", ("cpu",), ("onnx",)),
    Offer("fp16", "default", ("cuda",), ("onnx", "torch_export")),
)
HERE = Availability(True, devices=("cpu", "cuda:0"), offers=OFFERS)


def request(device: str = "cpu", fmt: str = "onnx", precision: str = "fp32", variant: str = "default",
            options: dict | None = None, path: Path = Path("m.onnx"), calibration: list | None = None) -> LoadSpec:
    return LoadSpec(path, fmt, device, precision, variant, options or {}, 1, calibration or [], path.parent / "work")


# --- the check: pure -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [request(), request("cuda:1", precision="fp16", fmt="torch_export"),
                                  request(precision="int8", variant="static")])
def test_offered_requests_pass(spec: LoadSpec) -> None:
    assert refusal("b", HERE, spec) is None


@pytest.mark.parametrize("spec,reason", [
    (request("gpu:0"), "b does not run on 'gpu:0' here (it runs on cpu, cuda)"),
    (request(fmt="torchscript"), "b compiles onnx or torch_export models, not 'torchscript'"),
    (request(precision="bf16"), "b has no bf16/default mode here (it offers fp32/default, int8/static, fp16/default)"),
    (request("cuda:0", precision="int8", variant="static"), "b runs int8/static on cpu, not 'cuda:0'"),
    (request("cpu", precision="fp16", fmt="torch_export"), "b runs fp16/default on cuda, not 'cpu'"),
    (request("cpu", fmt="torch_export"), "b compiles fp32/default from onnx models, not 'torch_export'"),
])
def test_each_refusal_names_what_is_offered_instead(spec: LoadSpec, reason: str) -> None:
    assert refusal("b", HERE, spec) == reason


def test_artifact_formats_are_accepted_only_when_reloading_an_artifact() -> None:
    saved = request(fmt="b_engine")
    assert refusal("b", HERE, saved, ("b_engine",)) == "b compiles onnx or torch_export models, not 'b_engine'"
    saved.options["artifact"] = "true"
    assert refusal("b", HERE, saved, ("b_engine",)) is None
    assert refusal("b", HERE, saved) is not None  # another backend's artifact format stays refused


def test_an_unavailable_backend_refuses_with_its_probes_reason() -> None:
    assert refusal("b", Availability(False, "libb is not installed"), request()) == "libb is not installed"
    assert refusal("b", Availability(True, devices=("cpu",)), request()) == "b offers nothing on this host"


# --- one-line messages and out of memory: pure ---------------------------------------------------------------------

class OutOfMemoryError(RuntimeError):
    """Named as torch.cuda's is: the type's name alone says what happened."""


@pytest.mark.parametrize("error", [
    MemoryError(), MemoryError("numpy could not allocate 8 GiB"), OutOfMemoryError("CUDA: tried to allocate 2 GiB"),
    RuntimeError("CUDA error: out of memory"), RuntimeError("std::bad_alloc"),
    RuntimeError("CUDA error cudaErrorMemoryAllocation"), RuntimeError("RESOURCE_EXHAUSTED: XLA allocation"),
    OSError(12, "Cannot allocate memory"),
])
def test_out_of_memory_is_oom_in_every_phase(error: BaseException) -> None:
    for phase in ("compile", "runtime"):
        assert as_candidate_error(error, phase).category == "oom"


def test_other_errors_keep_the_phases_category_on_one_line_with_the_traceback_as_detail() -> None:
    try:
        raise ValueError("\n  the shapes differ\n  at line 3 of the graph\n")
    except ValueError as raised:
        error = as_candidate_error(raised, "runtime", "while running: ")
    assert (error.category, error.message) == ("runtime", "while running: ValueError: the shapes differ")
    assert "Traceback" in error.detail and "at line 3 of the graph" in error.detail


def test_a_candidate_error_passes_through_unchanged() -> None:
    original = CandidateError("compile", "option x is not a number", "detail")
    assert as_candidate_error(original, "runtime") is original


def test_one_line_is_short_and_never_empty() -> None:
    assert one_line(KeyError()) == "KeyError"
    assert len(one_line(RuntimeError("x" * 5000))) < 500
    assert one_line(RuntimeError("a\tb\r\nc"), summary=lambda e: str(e)) == "RuntimeError: a b c"


# --- the lifecycle on a real backend --------------------------------------------------------------------------------

def huge_allocation_model(path: Path) -> Path:
    """y = x + sum(ConstantOfShape(2**60 floats)): loads, and fails to allocate the moment it runs."""
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
             helper.make_node("Add", ["x", "total"], ["y"])]
    graph = helper.make_graph(nodes, "huge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(np.array([UNMAPPABLE_FLOATS], np.int64), "shape")])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


class ProbeCountingBackend(OnnxRuntimeBackend):
    """The real ONNX Runtime backend, counting its probes."""

    def __init__(self) -> None:
        self.probes = 0

    def probe(self) -> Availability:
        self.probes += 1
        return super().probe()


def test_the_probe_runs_once_per_backend_instance(tmp_path: Path) -> None:
    backend = ProbeCountingBackend()
    model = mlp_onnx(tmp_path / "m.onnx", inputs=4, outputs=2)
    for _ in range(2):
        backend.load(request(path=model)).close()
    with pytest.raises(CandidateError):
        backend.load(request("gpu:0", path=model))
    assert backend.probes == 1 and backend.availability() is backend.availability()


def test_a_library_error_while_loading_is_a_one_line_compile_failure(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf\nsecond line" * 4)
    with pytest.raises(CandidateError) as caught:
        OnnxRuntimeBackend().load(request(path=garbage))
    assert caught.value.category == "compile"
    assert "\n" not in caught.value.message and caught.value.message.split(":")[0].isidentifier()
    assert "Traceback" in caught.value.detail


def test_running_out_of_memory_is_oom_while_loading_and_while_running(tmp_path: Path) -> None:
    model = huge_allocation_model(tmp_path / "huge.onnx")
    backend = OnnxRuntimeBackend()
    loaded = backend.load(request(path=model))
    with pytest.raises(CandidateError) as caught:
        loaded.run({"x": np.ones(1, np.float32)})
    assert caught.value.category == "oom" and "Failed to allocate memory" in caught.value.message
    # static int8 runs the model on the calibration samples while loading
    calibrated = request(path=model, precision="int8", variant="static", calibration=[{"x": np.ones(1, np.float32)}])
    with pytest.raises(CandidateError) as caught:
        backend.load(calibrated)
    assert caught.value.category == "oom" and "\n" not in caught.value.message


def test_every_backend_refuses_an_unoffered_device_the_same_way(tmp_path: Path) -> None:
    """Whatever the backend, and whether or not its library is here: "unavailable", with the base's reason."""
    for name in registry.names():
        backend = registry.load_backend(name)
        with pytest.raises(CandidateError) as caught:
            backend.load(request("npu:0", path=tmp_path / "never-read.onnx"))
        assert caught.value.category == "unavailable", name
        assert caught.value.message == refusal(name, backend.availability(), request("npu:0"),
                                               backend.artifact_formats), name
