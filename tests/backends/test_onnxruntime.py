"""OnnxRuntimeBackend against real ONNX Runtime on tiny models built here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from runners.backends import onnxruntime as ort_backend  # noqa: E402
from runners.backends.base import LoadSpec  # noqa: E402
from runners.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from speedster_run.shared.errors import CandidateError  # noqa: E402

RNG = np.random.default_rng(0)
# onnx 1.23 writes IR version 14 by default, newer than ORT 1.31 reads (13); opset 17 needs only IR 8.
IR_VERSION = 8
CHANNELS, HIDDEN, SIDE = 16, 64, 8
WEIGHTS = {
    "conv_w": RNG.normal(0, 0.3, (CHANNELS, 3, 3, 3)).astype(np.float32),
    "conv_b": RNG.normal(0, 0.1, (CHANNELS,)).astype(np.float32),
    "fc_w": RNG.normal(0, 0.05, (CHANNELS * SIDE * SIDE, HIDDEN)).astype(np.float32),
    "fc_b": RNG.normal(0, 0.1, (HIDDEN,)).astype(np.float32),
}


def make_spec(model_path: Path, workdir: Path, precision: str = "fp32", variant: str = "default",
              options: dict[str, str] | None = None, calibration: list | None = None) -> LoadSpec:
    """A CPU LoadSpec with one thread (the test machine has two cores)."""
    return LoadSpec(model_path=model_path, format="onnx", device="cpu", precision=precision, variant=variant,
                    options=options or {}, threads=1, calibration=calibration or [], workdir=workdir)


def conv_model(path: Path, fc_op: str = "MatMul", **save_kwargs) -> Path:
    """x[batch,3,8,8] -> Conv(3->16, 3x3, pad 1) -> Relu -> Flatten -> MatMul+Add or Gemm -> y[batch,64]."""
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"], axis=1),
    ]
    if fc_op == "Gemm":
        nodes.append(helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"]))
    else:
        nodes += [helper.make_node("MatMul", ["f", "fc_w"], ["m"]), helper.make_node("Add", ["m", "fc_b"], ["y"])]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", HIDDEN])],
        [numpy_helper.from_array(value, name) for name, value in WEIGHTS.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), **save_kwargs)
    return path


def reference(x: np.ndarray) -> np.ndarray:
    """The conv model in numpy (float64)."""
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # n,c,h,w,3,3
    conv = np.einsum("nchwij,ocij->nohw", windows, WEIGHTS["conv_w"]) + WEIGHTS["conv_b"][None, :, None, None]
    return np.maximum(conv, 0).reshape(len(x), -1) @ WEIGHTS["fc_w"] + WEIGHTS["fc_b"]


def sample(batch: int = 2) -> np.ndarray:
    return RNG.normal(0, 1, (batch, 3, SIDE, SIDE)).astype(np.float32)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean(np.abs(got - want)) / np.mean(np.abs(want)))


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


def test_module_import_does_not_import_onnxruntime() -> None:
    code = "import sys, runners.backends.onnxruntime; assert not {'onnx', 'onnxruntime'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_probe_reports_versions_devices_and_offers(backend: OnnxRuntimeBackend) -> None:
    availability = backend.probe()
    assert availability.available, availability.reason
    assert availability.versions == {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
    assert availability.devices[0] == "cpu"
    modes = {(offer.precision, offer.variant): offer for offer in availability.offers}
    assert {("fp32", "default"), ("int8", "dynamic"), ("int8", "static")} <= set(modes)
    assert all(offer.formats == ("onnx",) for offer in availability.offers)
    assert modes[("int8", "dynamic")].devices == ("cpu",)
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert (("fp16", "default") in modes) == has_cuda == any(d.startswith("cuda:") for d in availability.devices)


@pytest.mark.parametrize("fc_op", ["Gemm", "MatMul"])
def test_fp32_matches_reference(backend: OnnxRuntimeBackend, tmp_path: Path, fc_op: str) -> None:
    model = backend.load(make_spec(conv_model(tmp_path / "m.onnx", fc_op), tmp_path / "work"))
    x = sample(3)
    np.testing.assert_allclose(model.run({"x": x})["y"], reference(x), rtol=1e-5, atol=1e-5)
    assert model.details["providers"] == "CPUExecutionProvider"
    assert model.details["graph_optimization_level"] == "all"
    assert model.details["quantization"] == "none"


def test_symbolic_batch_dim_is_none_with_its_name(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model = backend.load(make_spec(conv_model(tmp_path / "m.onnx"), tmp_path / "work"))
    (x_info,), (y_info,) = model.inputs, model.outputs
    assert (x_info.name, x_info.dtype, x_info.shape, x_info.dim_names) == (
        "x", "float32", (None, 3, SIDE, SIDE), ("batch", "", "", ""))
    assert (y_info.shape, y_info.dim_names) == ((None, HIDDEN), ("batch", ""))
    assert model.run({"x": sample(5)})["y"].shape == (5, HIDDEN)


def test_int8_dynamic_stays_close(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model = backend.load(make_spec(conv_model(tmp_path / "m.onnx"), tmp_path / "work", "int8", "dynamic"))
    x = sample(4)
    assert relative_error(model.run({"x": x})["y"], reference(x)) < 0.1
    assert model.details["quantization"].startswith("int8 dynamic")
    assert "MatMulInteger" in model.details["quantized_ops"]
    assert (tmp_path / "work" / "m.int8-dynamic.onnx").exists()


def test_int8_static_stays_close(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    calibration = [{"x": sample(1)} for _ in range(8)]
    spec = make_spec(conv_model(tmp_path / "m.onnx"), tmp_path / "work", "int8", "static", calibration=calibration)
    model = backend.load(spec)
    x = sample(4)
    assert relative_error(model.run({"x": x})["y"], reference(x)) < 0.1
    assert model.details["quantization"].startswith("int8 static QDQ")
    assert "8 samples" in model.details["quantization"]
    assert model.details["preprocess"] == "done"
    assert "QuantizeLinear" in model.details["quantized_ops"]


def test_int8_static_without_calibration_fails_to_compile(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(conv_model(tmp_path / "m.onnx"), tmp_path / "work", "int8", "static"))
    assert caught.value.category == "compile"
    assert "calibration" in caught.value.message


def test_fp16_conversion_keeps_fp32_io(tmp_path: Path) -> None:
    # fp16 is offered on CUDA only (the base refuses it on CPU); the conversion itself runs anywhere, and on CPU ORT
    # inserts casts around fp16 nodes, which is enough to check it.
    spec = make_spec(conv_model(tmp_path / "m.onnx"), tmp_path / "work", "fp16")
    path, details = ort_backend._prepare(spec)
    session, session_details = ort_backend._make_session(path, spec)
    model = ort_backend.OrtModel(session, path, spec, {**details, **session_details})
    assert [(t.name, t.dtype) for t in model.inputs + model.outputs] == [("x", "float32"), ("y", "float32")]
    x = sample(2)
    assert relative_error(model.run({"x": x})["y"], reference(x)) < 0.01
    weights = onnx.load(str(tmp_path / "work" / "m.fp16-default.onnx")).graph.initializer
    assert {w.data_type for w in weights} == {TensorProto.FLOAT16}


def test_two_inputs_two_outputs_with_int64(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["doubled"]), helper.make_node("Gather", ["a", "idx"], ["rows"], axis=0)],
        "two",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("rows", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.save_model(model, str(tmp_path / "two.onnx"))
    model = backend.load(make_spec(tmp_path / "two.onnx", tmp_path / "work"))
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [("a", "float32", (4, 3)), ("idx", "int64", (2,))]
    assert [t.name for t in model.outputs] == ["doubled", "rows"]
    a, idx = RNG.normal(size=(4, 3)).astype(np.float32), np.array([3, 0], dtype=np.int64)
    out = model.run({"a": a, "idx": idx})
    assert list(out) == ["doubled", "rows"]
    np.testing.assert_array_equal(out["doubled"], a + a)
    np.testing.assert_array_equal(out["rows"], a[idx])


@pytest.mark.parametrize("precision,variant", [("fp32", "default"), ("int8", "dynamic")])
def test_external_data_loads_runs_and_saves(backend: OnnxRuntimeBackend, tmp_path: Path, precision: str,
                                            variant: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    conv_model(source / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
               size_threshold=0)
    assert (source / "weights.bin").stat().st_size > 60_000
    model = backend.load(make_spec(source / "m.onnx", tmp_path / "work", precision, variant))
    x = sample(2)
    want = model.run({"x": x})["y"]
    assert relative_error(want, reference(x)) < (1e-5 if precision == "fp32" else 0.1)
    out = tmp_path / "saved"
    out.mkdir()
    artifact = model.save(out)
    assert len(artifact.files) == 2 and artifact.files[0] == artifact.file_name
    assert sorted(p.name for p in out.iterdir()) == sorted(artifact.files)
    if precision == "fp32":
        assert artifact.files == ("m.onnx", "weights.bin")
    else:  # quantisation kept the weights outside the proto too
        assert model.details["external_data"] == "true"
    again = backend.load(make_spec(out / artifact.file_name, tmp_path / "work2", precision, variant, artifact.options))
    np.testing.assert_array_equal(again.run({"x": x})["y"], want)


def test_reusing_a_workdir_rewrites_external_data(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    # onnx appends to an existing external data file, so a retried candidate must not inherit the old one.
    conv_model(tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin")
    spec = make_spec(tmp_path / "m.onnx", tmp_path / "work", "int8", "dynamic")
    backend.load(spec)
    size_bytes = (tmp_path / "work" / "m.int8-dynamic.onnx.data").stat().st_size
    backend.load(spec).run({"x": sample(1)})
    assert (tmp_path / "work" / "m.int8-dynamic.onnx.data").stat().st_size == size_bytes


def test_saved_artifact_reloads_without_requantizing(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    calibration = [{"x": sample(1)} for _ in range(4)]
    spec = make_spec(conv_model(tmp_path / "m.onnx"), tmp_path / "work", "int8", "static",
                     {"graph_optimization_level": "extended"}, calibration)
    model = backend.load(spec)
    x = sample(3)
    want = model.run({"x": x})["y"]
    out = tmp_path / "saved"
    out.mkdir()
    artifact = model.save(out)
    assert (artifact.format, artifact.precision, artifact.variant) == ("onnx", "int8", "static")
    assert artifact.options == {"artifact": "true", "graph_optimization_level": "extended"}
    assert sorted(p.name for p in out.iterdir()) == list(artifact.files) == [artifact.file_name]
    # No calibration samples: re-quantising would fail, so a pass shows the artifact is used as is.
    reload_spec = LoadSpec(out / artifact.file_name, artifact.format, "cpu", artifact.precision, artifact.variant,
                           artifact.options, 1, [], tmp_path / "work2")
    again = backend.load(reload_spec)
    np.testing.assert_array_equal(again.run({"x": x})["y"], want)
    assert again.details["source"] == "artifact"
    assert again.details["graph_optimization_level"] == "extended"
    assert not (tmp_path / "work2").exists() or not any((tmp_path / "work2").iterdir())


@pytest.mark.parametrize("precision,variant", [("fp32", "default"), ("int8", "dynamic")])
def test_corrupt_model_fails_to_compile(backend: OnnxRuntimeBackend, tmp_path: Path, precision: str,
                                        variant: str) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(path, tmp_path / "work", precision, variant))
    assert caught.value.category == "compile"
    assert "\n" not in caught.value.message and caught.value.detail


def test_wrong_input_shape_is_a_runtime_error(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model = backend.load(make_spec(conv_model(tmp_path / "m.onnx"), tmp_path / "work"))
    with pytest.raises(CandidateError) as caught:
        model.run({"x": np.zeros((1, 3, SIDE + 1, SIDE), dtype=np.float32)})
    assert caught.value.category == "runtime"
    assert "\n" not in caught.value.message


def test_unsupported_requests_are_unavailable(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    path = conv_model(tmp_path / "m.onnx")
    for spec in (make_spec(path, tmp_path, "int4"), make_spec(path, tmp_path, "bf16")):
        with pytest.raises(CandidateError) as caught:
            backend.load(spec)
        assert caught.value.category == "unavailable"
    spec = make_spec(path, tmp_path)
    spec.device = "gpu:0"
    with pytest.raises(CandidateError, match="gpu:0"):
        backend.load(spec)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        spec.device = "cuda:0"
        with pytest.raises(CandidateError) as caught:
            backend.load(spec)
        assert caught.value.category == "unavailable"
