"""TensorRT backend: the parts that need no GPU run everywhere (options, profiles, precision plans, the ONNX passes
made with onnx/onnxruntime, failure mapping, the probe); engines are built and run where a CUDA GPU and TensorRT
are present (the image speedster-run/tensorrt on a GPU host)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runners.backends import tensorrt as trt_backend
from runners.backends import tensorrt_onnx as trt_onnx
from runners.backends.base import Availability, LoadSpec, TensorInfo, refusal
from runners.backends.tensorrt import TensorRtBackend
from runners.backends.tensorrt_engine import build_failure, parser_failure
from runners.backends.tensorrt_onnx import PrecisionPlan, precision_plan
from runners.backends.tensorrt_options import TrtOptions, build_profiles, parse_options
from speedster_run.shared.errors import CandidateError
from tests.conftest import mlp_onnx

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
AVAILABLE = TensorRtBackend().probe().available
needs_gpu = pytest.mark.skipif(not AVAILABLE, reason="needs a CUDA GPU and TensorRT")
X = TensorInfo("x", "float32", (None, 3, None, None), ("batch", "", "height", "width"))
IDS = TensorInfo("ids", "int64", (2, 5))


def sample(*shape: int) -> np.ndarray:
    return np.zeros(shape, np.float32)


def compile_error(call, *args) -> CandidateError:
    with pytest.raises(CandidateError) as caught:
        call(*args)
    assert caught.value.category == "compile"
    return caught.value


# --- options -------------------------------------------------------------------------------------------------------

def test_options_default() -> None:
    assert parse_options({}) == TrtOptions()


def test_options_parsed() -> None:
    options = parse_options({"profile": json.dumps({"x": [[1, 3, 8, 8], [4, 3, 8, 8], [8, 3, 16, 16]]}),
                             "workspace_mb": "512", "cache_dir": "/c", "calibration_method": "minmax",
                             "builder_optimization_level": "5", "artifact": "true", "graph_optimization_level": "x"})
    assert options.profile == {"x": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 16, 16))}
    assert (options.workspace_bytes, options.cache_dir, options.calibration_method) == (512 << 20, "/c", "minmax")
    assert (options.builder_optimization_level, options.artifact) == (5, True)


@pytest.mark.parametrize("options,words", [
    ({"profile": "{x"}, "not JSON"),
    ({"profile": "[1, 2]"}, "map input names"),
    ({"profile": '{"x": [[1, 3], [2, 3]]}'}, "[min, opt, max]"),
    ({"profile": '{"x": [[0, 3], [1, 3], [2, 3]]}'}, "positive integers"),
    ({"workspace_mb": "lots"}, "workspace_mb"),
    ({"calibration_method": "mse"}, "entropy, minmax, percentile"),
    ({"builder_optimization_level": "7"}, "0..5"),
])
def test_bad_options_fail_to_compile(options: dict[str, str], words: str) -> None:
    assert words in compile_error(parse_options, options).message


# --- optimisation profiles -----------------------------------------------------------------------------------------

def test_profile_from_the_option_wins_over_samples() -> None:
    options = parse_options({"profile": json.dumps({"x": [[1, 3, 8, 8], [2, 3, 8, 8], [4, 3, 8, 8]]})})
    profiles = build_profiles([X], options, [{"x": sample(9, 3, 9, 9)}])
    assert profiles == {"x": ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}


def test_profile_from_samples_spans_them_and_opt_is_the_most_frequent_shape() -> None:
    samples = [{"x": sample(2, 3, 8, 8)}, {"x": sample(4, 3, 16, 8)}, {"x": sample(4, 3, 16, 8)},
               {"x": sample(1, 3, 8, 32)}]
    assert build_profiles([X], TrtOptions(), samples) == {"x": ((1, 3, 8, 8), (4, 3, 16, 8), (4, 3, 16, 32))}


def test_static_inputs_need_no_profile() -> None:
    assert build_profiles([IDS], TrtOptions(), []) == {}


def test_a_symbolic_input_without_samples_or_option_names_the_option() -> None:
    error = compile_error(build_profiles, [X], TrtOptions(), [])
    assert "'x'" in error.message and "batch, height, width" in error.message and "profile=" in error.message


@pytest.mark.parametrize("shapes,words", [
    ([[1, 3, 8], [1, 3, 8], [1, 3, 8]], "rank 3"),
    ([[1, 4, 8, 8], [1, 4, 8, 8], [1, 4, 8, 8]], "has 4 at axis 1, where the model fixes 3"),
    ([[4, 3, 8, 8], [2, 3, 8, 8], [8, 3, 8, 8]], "min <= opt <= max"),
])
def test_inconsistent_profiles_fail_with_the_input_name(shapes: list, words: str) -> None:
    options = parse_options({"profile": json.dumps({"x": shapes})})
    error = compile_error(build_profiles, [X], options, [])
    assert words in error.message and "'x'" in error.message


def test_profile_for_an_unknown_input_is_refused() -> None:
    options = parse_options({"profile": json.dumps({"y": [[1], [1], [1]]})})
    assert "y (inputs: x)" in compile_error(build_profiles, [X], options, []).message


# --- precision plans -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision,major,qdq,plan", [
    ("fp32", 10, False, PrecisionPlan("none", False, (), ("TF32",))),
    ("fp16", 10, False, PrecisionPlan("none", False, ("FP16",), ())),
    ("int8", 10, False, PrecisionPlan("qdq", True, (), ())),
    ("int8", 10, True, PrecisionPlan("none", True, (), ())),
    ("fp32", 11, False, PrecisionPlan("none", True, (), ("TF32",))),
    ("fp16", 11, False, PrecisionPlan("fp16", True, (), ())),
    ("int8", 11, True, PrecisionPlan("none", True, (), ())),
])
def test_precision_plans(precision: str, major: int, qdq: bool, plan: PrecisionPlan) -> None:
    assert precision_plan(precision, major, qdq) == plan


def test_int8_never_uses_the_deprecated_implicit_calibration() -> None:
    for major in (10, 11):
        assert "INT8" not in precision_plan("int8", major, False).set_flags


def test_unknown_precision_is_unavailable() -> None:
    with pytest.raises(CandidateError) as caught:
        precision_plan("bf16", 10, False)
    assert caught.value.category == "unavailable"


# --- failure mapping -----------------------------------------------------------------------------------------------

def test_parser_errors_become_one_compile_failure_naming_the_unsupported_op() -> None:
    error = parser_failure(["In node 3 (parseGraph): INVALID_NODE: bad\n shape",
                            "In node 7 (importFallback): UNSUPPORTED_NODE: No importer registered for op: Mystery"])
    assert error.category == "compile"
    assert "No importer registered for op: Mystery" in error.message and "(+1 more)" in error.message
    assert "INVALID_NODE: bad shape" in error.detail


def test_build_failure_out_of_memory_is_oom() -> None:
    assert build_failure(["Requested amount of GPU memory could not be allocated: out of memory"]).category == "oom"
    assert build_failure(["no implementation for layer"]).category == "compile"
    assert "returned no engine" in build_failure([]).message


def test_cuda_allocation_errors_are_oom() -> None:
    from speedster_run.shared.errors import as_candidate_error

    # what cuda_call raises when cudaMalloc fails
    assert as_candidate_error(RuntimeError("CUDA error cudaErrorMemoryAllocation"), "runtime").category == "oom"


# --- the ONNX passes (onnx + onnxruntime, as in the image) ---------------------------------------------------------

def spec_for(model: Path, tmp_path: Path, precision: str, calibration: list | None = None,
             options: dict | None = None) -> LoadSpec:
    return LoadSpec(model, "onnx", "cuda:0", precision, "default", options or {}, 0, calibration or [],
                    tmp_path / "work")


def test_tensor_infos_come_from_the_onnx_graph(tmp_path: Path) -> None:
    inputs, outputs = trt_onnx.onnx_tensor_infos(mlp_onnx(tmp_path / "m.onnx"))
    assert inputs == [TensorInfo("x", "float32", (None, 256), ("batch", ""))]
    assert outputs == [TensorInfo("y", "float32", (None, 64), ("batch", ""))]


def test_qdq_pass_makes_symmetric_int8_that_stays_close(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = mlp_onnx(tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    calibration = [{"x": rng.standard_normal((2, 256)).astype(np.float32)} for _ in range(8)]
    plan = precision_plan("int8", 10, trt_onnx.has_qdq(model))
    path, note = trt_onnx.prepare_onnx(spec_for(model, tmp_path, "int8", calibration), plan,
                                          parse_options({"calibration_method": "minmax"}))
    assert "symmetric int8" in note and "minmax over 8 samples" in note
    graph = onnx.load(str(path)).graph
    assert trt_onnx.has_qdq(path)
    zero_points = [numpy_helper.to_array(t) for t in graph.initializer if "zero_point" in t.name]
    # TensorRT: symmetric signed int8 (zero points 0), float biases
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert [t.data_type for t in graph.initializer if t.name == "B"] == [onnx.TensorProto.FLOAT]
    x = calibration[0]["x"]
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.mean(np.abs(got - want)) / np.mean(np.abs(want)) < 0.05


def test_a_model_with_qdq_nodes_is_built_as_it_is(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    model = mlp_onnx(tmp_path / "m.onnx")
    reader = trt_onnx._samples_reader([{"x": np.ones((1, 256), np.float32)}])
    quantize_static(str(model), str(tmp_path / "q.onnx"), reader, quant_format=QuantFormat.QDQ)
    assert trt_onnx.has_qdq(tmp_path / "q.onnx") and not trt_onnx.has_qdq(model)
    plan = precision_plan("int8", 10, True)
    path, note = trt_onnx.prepare_onnx(spec_for(tmp_path / "q.onnx", tmp_path, "int8"), plan, TrtOptions())
    assert (path, note) == (tmp_path / "q.onnx", "Q/DQ nodes of the model")


def test_int8_without_samples_or_qdq_nodes_fails_to_compile(tmp_path: Path) -> None:
    plan = precision_plan("int8", 10, False)
    error = compile_error(trt_onnx.prepare_onnx, spec_for(mlp_onnx(tmp_path / "m.onnx"), tmp_path, "int8"), plan,
                          TrtOptions())
    assert "calibration samples" in error.message


def test_fp16_pass_for_strongly_typed_builds_keeps_fp32_io(tmp_path: Path) -> None:
    import onnx

    plan = precision_plan("fp16", 11, False)
    path, _ = trt_onnx.prepare_onnx(spec_for(mlp_onnx(tmp_path / "m.onnx"), tmp_path, "fp16"), plan, TrtOptions())
    graph = onnx.load(str(path)).graph
    assert {t.data_type for t in graph.initializer} == {onnx.TensorProto.FLOAT16}
    assert trt_onnx.onnx_tensor_infos(path)[0][0].dtype == "float32"


# --- probe and requests --------------------------------------------------------------------------------------------

def test_module_import_does_not_import_tensorrt() -> None:
    code = "import sys, runners.backends.tensorrt; assert not {'tensorrt', 'onnx', 'torch'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.skipif(AVAILABLE, reason="TensorRT and a CUDA GPU are present here")
def test_probe_says_why_it_is_unavailable_fast() -> None:
    started = time.perf_counter()
    availability = TensorRtBackend().probe()
    assert time.perf_counter() - started < 1
    assert not availability.available
    assert availability.reason == (trt_backend.NO_DEVICE if HAS_TRT else trt_backend.NOT_INSTALLED)
    assert "speedster-run/tensorrt" in trt_backend.NOT_INSTALLED


# What the probe answers on a GPU host with Torch-TensorRT: the base checks requests against it.
ON_A_GPU_HOST = Availability(True, devices=("cuda:0",), offers=trt_backend.offers(torch_tensorrt=True))


@pytest.mark.parametrize("device,fmt,precision,variant,options", [
    ("cpu", "onnx", "fp32", "default", {}), ("cuda:0", "onnx", "int8", "default", {}),
    ("cuda:0", "onnx", "bf16", "default", {}), ("cuda:0", "torchscript", "fp32", "default", {}),
    ("cuda:0", "onnx", "fp32", "torch", {}), ("cuda:0", "tensorrt_engine", "fp32", "default", {}),
])
def test_requests_it_cannot_serve_are_unavailable(tmp_path: Path, device: str, fmt: str, precision: str,
                                                   variant: str, options: dict) -> None:
    spec = LoadSpec(tmp_path / "m", fmt, device, precision, variant, options, 0, [], tmp_path)
    assert refusal(TensorRtBackend.name, ON_A_GPU_HOST, spec, TensorRtBackend.artifact_formats)
    with pytest.raises(CandidateError) as caught:
        TensorRtBackend().load(spec)
    assert caught.value.category == "unavailable"


@pytest.mark.parametrize("fmt,precision,variant,options", [
    ("onnx", "fp16", "default", {}), ("onnx", "int8", "qdq", {}), ("torch_export", "fp16", "torch", {}),
    ("tensorrt_engine", "fp32", "default", {"artifact": "true"}),
    ("torch_export", "fp32", "torch", {"artifact": "true"}),
])
def test_requests_it_serves_pass_the_check(tmp_path: Path, fmt: str, precision: str, variant: str,
                                           options: dict) -> None:
    spec = LoadSpec(tmp_path / "m", fmt, "cuda:1", precision, variant, options, 0, [], tmp_path)
    assert refusal(TensorRtBackend.name, ON_A_GPU_HOST, spec, TensorRtBackend.artifact_formats) is None


# --- for real, where the GPU is ------------------------------------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 1e-2), ("int8", 0.1)])
def test_engine_builds_runs_saves_and_reloads(tmp_path: Path, precision: str, tolerance: float) -> None:
    import onnxruntime as ort

    model = mlp_onnx(tmp_path / "m.onnx")
    rng = np.random.default_rng(2)
    calibration = [{"x": rng.standard_normal((b, 256)).astype(np.float32)} for b in (1, 4, 4, 8)]
    spec = LoadSpec(model, "onnx", "cuda:0", precision, "qdq" if precision == "int8" else "default", {}, 0,
                    calibration, tmp_path / "work")
    loaded = TensorRtBackend().load(spec)
    assert json.loads(loaded.details["profiles"]) == {"x": [[1, 256], [4, 256], [8, 256]]}
    x = calibration[1]["x"]
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = loaded.run({"x": x})["y"]
    assert np.mean(np.abs(got - want)) / np.mean(np.abs(want)) < tolerance
    assert Path(loaded.details["timing_cache"]).stat().st_size > 0
    saved = tmp_path / "saved"
    saved.mkdir()
    artifact = loaded.save(saved)
    again = TensorRtBackend().load(LoadSpec(saved / artifact.file_name, artifact.format, "cuda:0", precision,
                                            artifact.variant, artifact.options, 0, [], tmp_path / "work2"))
    assert again.inputs == loaded.inputs
    np.testing.assert_array_equal(again.run({"x": x})["y"], got)
    loaded.close()
    again.close()


@needs_gpu
def test_unsupported_op_is_a_compile_failure(tmp_path: Path) -> None:
    from tests.conftest import mystery_onnx

    spec = LoadSpec(mystery_onnx(tmp_path / "m.onnx"), "onnx", "cuda:0", "fp32", "default", {}, 0, [], tmp_path)
    with pytest.raises(CandidateError) as caught:
        TensorRtBackend().load(spec)
    assert caught.value.category == "compile"
    assert "cannot parse" in caught.value.message
