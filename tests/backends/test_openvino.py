"""OpenVINO backend against real openvino/nncf, on tiny ONNX models built here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

# Checked without importing: a plain `import openvino` sends a telemetry event unless the backend's guard runs first.
assert importlib.util.find_spec("openvino") is not None, "openvino is not installed: run scripts/setup.sh"

from runners.backends.base import LoadSpec  # noqa: E402
from runners.backends.openvino import OpenVinoBackend, import_openvino  # noqa: E402
from speedster_run.shared.errors import CandidateError  # noqa: E402

RNG = np.random.default_rng(0)


def make_spec(path: Path, precision: str = "fp32", **overrides) -> LoadSpec:
    """A LoadSpec for `path` on CPU, one thread; keyword arguments override any field."""
    fields = dict(
        model_path=path,
        format="onnx",
        device="cpu",
        precision=precision,
        variant="nncf" if precision == "int8" else "default",
        options={},
        threads=1,
        calibration=[],
        workdir=path.parent,
    )
    fields.update(overrides)
    return LoadSpec(**fields)


def weight(name: str, shape: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal(shape) * 0.2).astype(np.float32), name)


def save_model(graph: onnx.GraphProto, path: Path, **save_args) -> Path:
    # IR version 10: the onnxruntime used as reference may not read the newest one onnx writes.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), **save_args)
    return path


def conv_graph() -> onnx.GraphProto:
    """conv-relu-conv-relu-gemm on [N, 3, 16, 16]: big enough for NNCF to quantise the convolutions and the gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Flatten", ["r2"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"]),
    ]
    weights = [weight("w1", [16, 3, 3, 3]), weight("b1", [16]), weight("w2", [16, 16, 3, 3]), weight("b2", [16])]
    weights += [weight("w3", [16 * 16 * 16, 10]), weight("b3", [10])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    return helper.make_graph(nodes, "conv", [x], [y], weights)


def reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def images(batch: int) -> np.ndarray:
    return RNG.standard_normal((batch, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def backend() -> OpenVinoBackend:
    return OpenVinoBackend()


@pytest.fixture(scope="module")
def conv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model(conv_graph(), tmp_path_factory.mktemp("conv") / "model.onnx")


def test_probe_reports_versions_and_honest_offers(backend: OpenVinoBackend) -> None:
    availability = backend.probe()
    assert availability.available, availability.reason
    assert availability.versions["openvino"][0].isdigit() and "nncf" in availability.versions
    assert "cpu" in availability.devices
    offers = {(offer.precision, offer.variant): offer for offer in availability.offers}
    assert "cpu" in offers["fp32", "default"].devices and "cpu" in offers["int8", "nncf"].devices
    capabilities = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    # bf16/fp16 on CPU are offered exactly when the CPU plugin says the hardware does them.
    assert ("BF16" in capabilities) == ("cpu" in getattr(offers.get(("bf16", "default")), "devices", ()))
    assert ("FP16" in capabilities) == ("cpu" in getattr(offers.get(("fp16", "default")), "devices", ()))


def test_imports_send_no_telemetry(tmp_path: Path) -> None:
    """Outside pytest (NNCF stubs its telemetry under pytest), with no CI markers and a fresh home directory."""
    script = (
        "import sys\n"
        "from runners.registry import load_backend\n"
        "backend = load_backend('openvino')\n"
        "assert 'openvino' not in sys.modules, 'importing the backend module must not import openvino'\n"
        "backend.probe()\n"
        "import openvino_telemetry, unittest.mock, nncf.telemetry.wrapper as w, os\n"
        "print(openvino_telemetry.Telemetry().consent, isinstance(w.telemetry, unittest.mock.MagicMock),"
        " os.environ.get('CI'), os.environ.get('NNCF_CI'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV", "TF_BUILD", "JENKINS_URL")}
    env["HOME"] = str(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    run = dict(env=env, cwd=repo, capture_output=True, text=True, timeout=120)
    result = subprocess.run([sys.executable, "-c", script], **run)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "None", "None"]
    assert not (tmp_path / "intel").exists()  # no client id written either


def test_fp32_matches_onnxruntime(backend: OpenVinoBackend, conv_path: Path) -> None:
    model = backend.load(make_spec(conv_path))
    x = images(2)
    (expected,) = reference(conv_path, {"x": x})
    np.testing.assert_allclose(model.run({"x": x})["y"], expected, atol=1e-4, rtol=1e-4)
    assert model.details["inference_precision"] == "f32"
    assert model.details["num_threads"] == "1" and model.details["quantization"] == "none"
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [("x", "float32", (None, 3, 16, 16))]


@pytest.mark.parametrize("precision, hint", [("bf16", "bf16"), ("fp16", "f16")])
def test_lower_precision_when_offered(backend: OpenVinoBackend, conv_path: Path, precision: str, hint: str) -> None:
    offered = {offer.precision for offer in backend.probe().offers if "cpu" in offer.devices}
    if precision not in offered:
        pytest.skip(f"this CPU has no native {precision}")
    model = backend.load(make_spec(conv_path, precision))
    x = images(2)
    (expected,) = reference(conv_path, {"x": x})
    assert model.details["inference_precision"] == hint
    assert np.abs(model.run({"x": x})["y"] - expected).mean() / np.abs(expected).mean() < 0.05


def test_int8_nncf_stays_close_to_fp32(backend: OpenVinoBackend, conv_path: Path) -> None:
    calibration = [{"x": images(1)} for _ in range(16)]
    model = backend.load(make_spec(conv_path, "int8", calibration=calibration))
    x = images(4)
    (expected,) = reference(conv_path, {"x": x})
    got = model.run({"x": x})["y"]
    assert np.abs(got - expected).mean() / np.abs(expected).mean() < 0.1
    assert model.details["quantization"] == "nncf" and model.details["calibration_samples"] == "16"
    assert int(model.details["fake_quantize_ops"]) > 0


def test_int8_without_calibration_is_a_compile_failure(backend: OpenVinoBackend, conv_path: Path) -> None:
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(conv_path, "int8"))
    assert caught.value.category == "compile"


def test_two_inputs_two_outputs_with_int64(backend: OpenVinoBackend, tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Gather", ["table", "index"], ["rows"], axis=0),
        helper.make_node("Add", ["index", "one"], ["next"]),
    ]
    inputs = [
        helper.make_tensor_value_info("table", TensorProto.FLOAT, [4, 3]),
        helper.make_tensor_value_info("index", TensorProto.INT64, [2]),
    ]
    outputs = [
        helper.make_tensor_value_info("rows", TensorProto.FLOAT, [2, 3]),
        helper.make_tensor_value_info("next", TensorProto.INT64, [2]),
    ]
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    path = save_model(helper.make_graph(nodes, "two", inputs, outputs, [one]), tmp_path / "two.onnx")
    model = backend.load(make_spec(path))
    assert [(t.name, t.dtype) for t in model.inputs] == [("table", "float32"), ("index", "int64")]
    assert [(t.name, t.dtype, t.shape) for t in model.outputs] == [("rows", "float32", (2, 3)), ("next", "int64", (2,))]
    table = RNG.standard_normal((4, 3)).astype(np.float32)
    index = np.array([3, 1], dtype=np.int64)
    out = model.run({"table": table, "index": index})
    np.testing.assert_array_equal(out["rows"], table[index])
    assert out["next"].dtype == np.int64 and out["next"].tolist() == [4, 2]


def test_symbolic_batch_runs_at_two_sizes(backend: OpenVinoBackend, conv_path: Path) -> None:
    model = backend.load(make_spec(conv_path))
    for batch in (1, 3):
        x = images(batch)
        (expected,) = reference(conv_path, {"x": x})
        np.testing.assert_allclose(model.run({"x": x})["y"], expected, atol=1e-4, rtol=1e-4)


def test_external_data_model(backend: OpenVinoBackend, tmp_path: Path) -> None:
    external = dict(save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    path = save_model(conv_graph(), tmp_path / "model.onnx", **external)
    assert (tmp_path / "weights.bin").stat().st_size > 100_000
    x = images(1)
    (expected,) = reference(path, {"x": x})
    np.testing.assert_allclose(backend.load(make_spec(path)).run({"x": x})["y"], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_saved_artifact_reloads_with_same_outputs(
    backend: OpenVinoBackend, conv_path: Path, tmp_path: Path, precision: str
) -> None:
    calibration = [{"x": images(1)} for _ in range(8)]
    model = backend.load(make_spec(conv_path, precision, calibration=calibration))
    artifact = model.save(tmp_path)
    assert artifact.format == "openvino_ir" and artifact.options["artifact"] == "true"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(artifact.files)
    spec = make_spec(
        tmp_path / artifact.file_name, artifact.precision, format=artifact.format, options=artifact.options
    )
    reloaded = backend.load(spec)  # no calibration given: an int8 artifact must not be quantised again
    x = images(2)
    np.testing.assert_allclose(reloaded.run({"x": x})["y"], model.run({"x": x})["y"], atol=1e-5, rtol=1e-5)
    if precision == "int8":
        assert reloaded.details["quantization"] == "nncf (saved artifact)"
        assert reloaded.details["fake_quantize_ops"] == model.details["fake_quantize_ops"]


def test_corrupt_model_is_a_compile_failure(backend: OpenVinoBackend, conv_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(conv_path.read_bytes()[:200])
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(path))
    assert caught.value.category == "compile" and "\n" not in caught.value.message and caught.value.detail


def test_wrong_input_shape_is_a_runtime_failure(backend: OpenVinoBackend, conv_path: Path) -> None:
    """threads=1: the configuration where OpenVINO's synchronous infer() returns empty outputs for a wrong shape."""
    model = backend.load(make_spec(conv_path))
    with pytest.raises(CandidateError, match="has shape") as caught:
        model.run({"x": np.zeros((1, 3, 8), dtype=np.float32)})
    assert caught.value.category == "runtime" and "\n" not in caught.value.message
    with pytest.raises(CandidateError, match="do not match"):
        model.run({})  # OpenVINO would reuse the previous call's tensor
    assert model.run({"x": images(1)})["y"].shape == (1, 10)  # the request survives the failures


@pytest.mark.parametrize("threads", [0, 1])
def test_error_inside_openvino_is_a_runtime_failure(backend: OpenVinoBackend, tmp_path: Path, threads: int) -> None:
    """A shape only known to be wrong at run time: [N] reshaped to [3, -1] fails for N = 4.

    With threads=1, OpenVINO's synchronous infer() would swallow this error and return the previous outputs."""
    target = numpy_helper.from_array(np.array([3, -1], dtype=np.int64), "target")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, None])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "target"], ["y"])], "reshape", [x], [y], [target])
    model = backend.load(make_spec(save_model(graph, tmp_path / "reshape.onnx"), threads=threads))
    assert model.run({"x": np.arange(6, dtype=np.float32)})["y"].shape == (3, 2)
    with pytest.raises(CandidateError) as caught:
        model.run({"x": np.arange(4, dtype=np.float32)})
    assert caught.value.category == "runtime" and "\n" not in caught.value.message, caught.value.message


def test_unsupported_variant_is_unavailable(backend: OpenVinoBackend, conv_path: Path) -> None:
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(conv_path, "fp32", variant="static"))
    assert caught.value.category == "unavailable"
