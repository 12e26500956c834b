"""ONNX Runtime's GPU execution providers (CUDA, TensorRT): the provider lists everywhere, real sessions where a CUDA
GPU and the GPU build of ONNX Runtime are present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from runners.backends.base import Availability, LoadSpec, refusal
from runners.backends.onnxruntime import OnnxRuntimeBackend, execution_providers
from speedster_run.shared.errors import CandidateError
from tests.conftest import mlp_onnx

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
HAS_CUDA_EP = "CUDAExecutionProvider" in ort.get_available_providers()
HAS_TRT_EP = "TensorrtExecutionProvider" in ort.get_available_providers()
GPU = any(d.startswith("cuda:") for d in OnnxRuntimeBackend().probe().devices)


def test_cpu_device_gets_the_cpu_provider_only(tmp_path: Path) -> None:
    assert execution_providers("cpu", "fp32", True, tmp_path, ALL) == ["CPUExecutionProvider"]


def test_cuda_device_gets_cuda_then_cpu_with_its_index(tmp_path: Path) -> None:
    assert execution_providers("cuda:1", "fp16", False, tmp_path, ALL) == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]


@pytest.mark.parametrize("precision,fp16", [("fp32", False), ("fp16", True)])
def test_tensorrt_comes_first_with_caches_in_the_workdir(tmp_path: Path, precision: str, fp16: bool) -> None:
    providers = execution_providers("cuda:0", precision, True, tmp_path, ALL)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == ALL
    name, options = providers[0]
    assert options == {"device_id": 0, "trt_fp16_enable": fp16, "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(tmp_path / "tensorrt-cache"), "trt_timing_cache_enable": True,
                       "trt_timing_cache_path": str(tmp_path / "tensorrt-cache")}


@pytest.mark.parametrize("tensorrt,missing", [(False, "CUDAExecutionProvider"), (True, "TensorrtExecutionProvider")])
def test_a_provider_this_build_lacks_is_unavailable(tmp_path: Path, tensorrt: bool, missing: str) -> None:
    available = [p for p in ALL if p != missing]
    with pytest.raises(CandidateError) as caught:
        execution_providers("cuda:0", "fp32", tensorrt, tmp_path, available)
    assert caught.value.category == "unavailable"
    assert missing in caught.value.message


def test_tensorrt_variant_on_cpu_is_refused(tmp_path: Path) -> None:
    spec = LoadSpec(mlp_onnx(tmp_path / "m.onnx"), "onnx", "cpu", "fp32", "tensorrt", {}, 1, [], tmp_path / "w")
    with pytest.raises(CandidateError) as caught:
        OnnxRuntimeBackend().load(spec)
    assert caught.value.category == "unavailable"
    # offered on CUDA devices only, where the provider is: "runs fp32/tensorrt on cuda", or no such mode here at all
    assert "fp32/tensorrt" in caught.value.message


def test_probe_offers_tensorrt_variants_only_with_the_provider_and_a_gpu() -> None:
    offers = {(o.precision, o.variant): o for o in OnnxRuntimeBackend().probe().offers}
    tensorrt = {("fp32", "tensorrt"), ("fp16", "tensorrt")}
    assert (tensorrt <= set(offers)) == (HAS_TRT_EP and GPU)
    assert not (tensorrt & set(offers)) or all(offers[m].devices == ("cuda",) for m in tensorrt)


def _run_on_gpu(tmp_path: Path, precision: str, variant: str) -> tuple[dict[str, str], float]:
    model = mlp_onnx(tmp_path / "m.onnx")
    spec = LoadSpec(model, "onnx", "cuda:0", precision, variant, {}, 0, [], tmp_path / "work")
    loaded = OnnxRuntimeBackend().load(spec)
    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = loaded.run({"x": x})["y"]
    return loaded.details, float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


@pytest.mark.skipif(not (HAS_CUDA_EP and GPU), reason="needs a CUDA GPU and onnxruntime-gpu")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_provider_runs_for_real(tmp_path: Path, precision: str) -> None:
    details, error = _run_on_gpu(tmp_path, precision, "default")
    assert details["providers"].startswith("CUDAExecutionProvider")
    assert error < (1e-4 if precision == "fp32" else 1e-2)


@pytest.mark.skipif(not (HAS_TRT_EP and GPU), reason="needs a CUDA GPU, onnxruntime-gpu and TensorRT")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_provider_runs_for_real(tmp_path: Path, precision: str) -> None:
    details, error = _run_on_gpu(tmp_path, precision, "tensorrt")
    assert details["providers"].startswith("TensorrtExecutionProvider")
    assert error < (1e-3 if precision == "fp32" else 1e-2)
    assert any((tmp_path / "work" / "tensorrt-cache").iterdir())  # the engine was cached for the next session


# --- onnxruntime-openvino: the OpenVINO EP, a backend of its own (its package replaces onnxruntime) ----------------

from runners.backends import onnxruntime_openvino as ov_ep  # noqa: E402

HAS_OV_EP = ov_ep.PROVIDER in ort.get_available_providers()
needs_ov_ep = pytest.mark.skipif(not HAS_OV_EP, reason="needs onnxruntime-openvino (the image "
                                                       "speedster-run/onnxruntime-openvino)")


def test_openvino_ep_options(tmp_path: Path) -> None:
    assert ov_ep.provider_options("cpu", "fp32", 2, tmp_path) == {
        "device_type": "CPU", "precision": "FP32", "cache_dir": str(tmp_path), "num_of_threads": "2"}
    assert ov_ep.provider_options("gpu:1", "fp16", 2, tmp_path) == {
        "device_type": "GPU.1", "precision": "FP16", "cache_dir": str(tmp_path)}
    assert ov_ep.runner_devices(["CPU", "GPU.1", "GPU.0", "NPU"]) == ("cpu", "gpu:0", "gpu:1")
    assert ov_ep.runner_devices(["CPU", "GPU"]) == ("cpu", "gpu:0")


def test_openvino_ep_offers_follow_the_devices() -> None:
    assert {(o.precision, o.variant, o.devices) for o in ov_ep.offers_for(("cpu",))} == {
        ("fp32", "default", ("cpu",)), ("int8", "static", ("cpu",))}
    assert {(o.precision, o.devices) for o in ov_ep.offers_for(("cpu", "gpu:0"))} == {
        ("fp32", ("cpu", "gpu")), ("fp16", ("gpu",)), ("int8", ("cpu",))}


@pytest.mark.parametrize("device,precision,variant", [("gpu:0", "int8", "static"), ("cpu", "fp16", "default"),
                                                      ("cuda:0", "fp32", "default"), ("cpu", "int8", "dynamic")])
def test_openvino_ep_refuses_what_it_cannot_serve(tmp_path: Path, device: str, precision: str, variant: str) -> None:
    devices = ("cpu", "gpu:0")
    probed = Availability(True, devices=devices, offers=ov_ep.offers_for(devices))
    spec = LoadSpec(tmp_path / "m.onnx", "onnx", device, precision, variant, {}, 1, [], tmp_path)
    assert refusal(ov_ep.OnnxRuntimeOpenVinoBackend.name, probed, spec)
    with pytest.raises(CandidateError) as caught:  # where the EP is missing, the probe's reason refuses it
        ov_ep.OnnxRuntimeOpenVinoBackend().load(spec)
    assert caught.value.category == "unavailable"


@pytest.mark.skipif(HAS_OV_EP, reason="onnxruntime-openvino is installed here")
def test_openvino_ep_probe_says_why_it_is_unavailable() -> None:
    availability = ov_ep.OnnxRuntimeOpenVinoBackend().probe()
    assert (availability.available, availability.reason) == (False, ov_ep.NO_PROVIDER)
    assert "speedster-run/onnxruntime-openvino" in availability.reason


@needs_ov_ep
@pytest.mark.parametrize("precision,variant,tolerance", [("fp32", "default", 1e-5), ("int8", "static", 0.05)])
def test_openvino_ep_runs_saves_and_reloads_for_real(tmp_path: Path, precision: str, variant: str,
                                                     tolerance: float) -> None:
    backend = ov_ep.OnnxRuntimeOpenVinoBackend()
    availability = backend.probe()
    assert availability.available and availability.devices[0] == "cpu"
    assert {("fp32", "default"), ("int8", "static")} <= {(o.precision, o.variant) for o in availability.offers}
    model_path = mlp_onnx(tmp_path / "m.onnx")
    rng = np.random.default_rng(3)
    calibration = [{"x": rng.standard_normal((2, 256)).astype(np.float32)} for _ in range(8)]
    spec = LoadSpec(model_path, "onnx", "cpu", precision, variant, {}, 1, calibration, tmp_path / "work")
    loaded = backend.load(spec)
    assert loaded.details["providers"].startswith(ov_ep.PROVIDER)
    assert loaded.details["openvino_device_type"] == "CPU"
    x = calibration[0]["x"]
    want = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = loaded.run({"x": x})["y"]
    assert np.mean(np.abs(got - want)) / np.mean(np.abs(want)) < tolerance
    if precision == "int8":
        assert "QuantizeLinear" in loaded.details["quantized_ops"]
    (tmp_path / "saved").mkdir()
    artifact = loaded.save(tmp_path / "saved")
    again = backend.load(LoadSpec(tmp_path / "saved" / artifact.file_name, "onnx", "cpu", precision, variant,
                                  artifact.options, 1, [], tmp_path / "work2"))
    np.testing.assert_allclose(again.run({"x": x})["y"], got, rtol=1e-5, atol=1e-5)
