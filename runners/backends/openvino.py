"""OpenVINO backend: ONNX or IR models compiled for CPU/GPU at fp32, bf16, fp16, or int8 after NNCF quantisation."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import numpy as np

from runners.backends.base import (
    Artifact,
    Availability,
    Backend,
    LoadedModel,
    LoadSpec,
    Offer,
    TensorInfo,
    device_index,
    device_kind,
    reloads_artifact,
)
from speedster_run.shared.errors import CandidateError, one_line

FORMATS = ("onnx", "openvino_ir")
# Set explicitly for every precision: left alone, the CPU plugin picks bf16 on AMX/AVX512-BF16 CPUs, so "fp32" would
# be a lie. int8 keeps f32 for the layers NNCF leaves unquantised.
PRECISION_HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16", "fp16": "f16"}
# OpenVINO element type names -> the numpy-style names of TensorInfo.
DTYPES = {
    "f32": "float32", "f16": "float16", "bf16": "bfloat16", "f64": "float64", "boolean": "bool",
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
}  # fmt: skip

# `import openvino` sends a Google Analytics event (openvino.tools.ovc, opt-out by default) and `import nncf` sets up
# its own. openvino_telemetry honours only a consent file (`opt_in_out --opt_out`) and CI markers: with CI=true both
# decline consent (they pass disable_in_ci=True) and write no client id; NNCF_CI replaces NNCF's sender by a stub.
# Both are read once, at import, so they are set for the import only and the rest of the process is untouched.
_TELEMETRY_OFF = {"CI": "true", "NNCF_CI": "1"}


@contextlib.contextmanager
def _telemetry_off() -> Iterator[None]:
    """Sets the variables that turn OpenVINO/NNCF telemetry off, and restores the environment afterwards."""
    saved = {key: os.environ.get(key) for key in _TELEMETRY_OFF}
    os.environ.update(_TELEMETRY_OFF)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def import_openvino() -> ModuleType:
    """`import openvino` with telemetry off."""
    with _telemetry_off():
        import openvino
    return openvino


def import_nncf() -> ModuleType:
    """`import nncf` with telemetry off (imports openvino first, so that its telemetry is off too)."""
    import_openvino()
    with _telemetry_off():
        import nncf
    return nncf


def summarize_error(error: BaseException) -> str:
    """The informative part of an OpenVINO message, which starts with lines of source locations."""
    noise = ("Exception from ", "Check '", "FrontEnd API failed")
    lines = [line.strip() for line in str(error).splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(noise))


def _gpu_devices(available: list[str]) -> list[str]:
    """OpenVINO GPU names ("GPU" when there is one, else "GPU.0", "GPU.1"...) -> "gpu:N"."""
    gpus = [name for name in available if name == "GPU" or name.startswith("GPU.")]
    return [f"gpu:{name.partition('.')[2] or 0}" for name in gpus]


def _ov_device(device: str) -> str:
    """"cpu" -> "CPU", "gpu:1" -> "GPU.1"."""
    return "CPU" if device_kind(device) == "cpu" else f"GPU.{device_index(device)}"


def _tensor_info(port: Any, index: int, prefix: str) -> TensorInfo:
    """A model input or output as TensorInfo; names are invented ("output_0") for unnamed tensors."""
    name = port.get_any_name() if port.get_names() else f"{prefix}_{index}"
    type_name = port.get_element_type().get_type_name()
    partial = port.get_partial_shape()
    dims = list(partial) if partial.rank.is_static else []
    shape = tuple(dim.get_length() if dim.is_static else None for dim in dims)
    return TensorInfo(name=name, dtype=DTYPES.get(type_name, type_name), shape=shape)


def _config(spec: LoadSpec) -> dict[str, Any]:
    """compile_model properties for the spec."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": spec.options.get("performance_hint", "LATENCY"),
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[spec.precision],
    }
    # The thread count is a CPU plugin property; the GPU plugin rejects it.
    if spec.threads > 0 and device_kind(spec.device) == "cpu":
        config["INFERENCE_NUM_THREADS"] = spec.threads
    return config


def _quantize(model: Any, calibration: list[dict[str, np.ndarray]]) -> Any:
    """Post-training int8 quantisation with NNCF, calibrated on every sample given."""
    if not calibration:
        raise CandidateError("compile", "int8 quantisation needs calibration samples; none were given")
    nncf = import_nncf()
    return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration))


def _count_ops(model: Any, type_name: str) -> int:
    return sum(op.get_type_name() == type_name for op in model.get_ops())


def _int8_kernels(compiled: Any) -> str:
    """How many runtime layers execute in i8/u8: tells whether the quantisation actually reached the kernels."""
    try:
        ops = compiled.get_runtime_model().get_ops()
        precisions = [op.get_rt_info()["runtimePrecision"].astype(str) for op in ops]
    except Exception:  # the key is a CPU plugin detail; other plugins may not report it
        return "unknown"
    return str(sum(p in ("i8", "u8") for p in precisions))


class OpenVinoModel(LoadedModel):
    """A compiled OpenVINO model with one reused infer request."""

    error_summary = staticmethod(summarize_error)

    def __init__(self, model: Any, compiled: Any, spec: LoadSpec, details: dict[str, str]):
        self._model = model  # the (quantised) ov.Model, kept for save()
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._spec = spec
        self.inputs = [_tensor_info(port, i, "input") for i, port in enumerate(compiled.inputs)]
        self.outputs = [_tensor_info(port, i, "output") for i, port in enumerate(compiled.outputs)]
        self.details = details
        self._input_index = {info.name: i for i, info in enumerate(self.inputs)}
        ranked = [port.get_partial_shape().rank.is_static for port in compiled.inputs]
        self._checked_shapes = {info.name: info.shape for info, static in zip(self.inputs, ranked) if static}

    def _check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Names and shapes, before OpenVINO sees them: a missing input would silently reuse the previous call's
        tensor, and a wrong shape gets a clearer message than the plugin's."""
        if set(feeds) != set(self._input_index):
            names = sorted(self._input_index)
            raise CandidateError("runtime", f"inputs {sorted(feeds)} do not match the model's {names}")
        for name, expected in self._checked_shapes.items():
            shape = np.shape(feeds[name])
            if len(shape) != len(expected) or any(want not in (None, got) for want, got in zip(expected, shape)):
                message = f"input {name!r} has shape {list(shape)}, the model takes {list(expected)}"
                raise CandidateError("runtime", message)

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._check_feeds(feeds)
        # start_async + wait rather than infer(): with INFERENCE_NUM_THREADS=1 the CPU plugin's (2026.4) synchronous
        # path swallows inference errors, returns the previous call's outputs, and may crash the process later.
        # The asynchronous path reports them, for a few microseconds more.
        self._request.start_async({self._input_index[name]: array for name, array in feeds.items()})
        self._request.wait()
        # Copies: the request reuses its output buffers on the next call.
        return {info.name: self._request.get_output_tensor(i).data.copy() for i, info in enumerate(self.outputs)}

    def save(self, directory: Path) -> Artifact:
        ov = import_openvino()
        # compress_to_fp16 defaults to True and would round the weights: the artifact must reload as it ran.
        ov.save_model(self._model, str(Path(directory) / "model.xml"), compress_to_fp16=False)
        return Artifact(
            format="openvino_ir",
            file_name="model.xml",
            precision=self._spec.precision,
            variant=self._spec.variant,
            options={**self._spec.options, "artifact": "true"},
            files=("model.xml", "model.bin"),
        )

    def close(self) -> None:
        self._request = self._compiled = self._model = None


class OpenVinoBackend(Backend):
    """OpenVINO Runtime, with NNCF for int8."""

    name = "openvino"
    error_summary = staticmethod(summarize_error)

    def __init__(self) -> None:
        self._core: Any = None

    def _get_core(self) -> Any:
        """One ov.Core per backend: it loads the device plugins, which is slow."""
        if self._core is None:
            self._core = import_openvino().Core()
        return self._core

    def probe(self) -> Availability:
        try:
            ov = import_openvino()
        except Exception as error:  # ImportError, or a native library that fails to load
            return Availability(available=False, reason=f"openvino is not installed: {error}")
        try:
            core = self._get_core()
            gpus = _gpu_devices(core.available_devices)
            capabilities = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        except Exception as error:
            return Availability(available=False, reason=f"openvino cannot list devices: "
                                                        f"{one_line(error, summarize_error)}")
        versions = {"openvino": ov.get_version().split("-")[0]}
        try:
            versions["nncf"] = import_nncf().__version__
        except Exception:  # no int8 offer without NNCF
            pass
        kinds = ("cpu", "gpu") if gpus else ("cpu",)
        offers = [Offer("fp32", "default", kinds, FORMATS, "f32 inference precision, set explicitly")]
        if "nncf" in versions:
            offers.append(Offer("int8", "nncf", kinds, FORMATS, "NNCF post-training quantisation, calibrated"))
        # Lower precisions only where the CPU plugin reports native support (AVX512-BF16/AMX, AVX512-FP16/AMX-FP16).
        if "BF16" in capabilities:
            offers.append(Offer("bf16", "default", ("cpu",), FORMATS, "bf16 inference precision"))
        fp16_kinds = (("cpu",) if "FP16" in capabilities else ()) + (("gpu",) if gpus else ())
        if fp16_kinds:
            offers.append(Offer("fp16", "default", fp16_kinds, FORMATS, "f16 inference precision"))
        return Availability(available=True, versions=versions, devices=("cpu", *gpus), offers=tuple(offers))

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        from_artifact = reloads_artifact(spec)
        core = self._get_core()
        model = core.read_model(str(spec.model_path))
        # An artifact was quantised before it was saved; quantising again would calibrate a quantised model.
        if spec.precision == "int8" and not from_artifact:
            model = _quantize(model, spec.calibration)
        compiled = core.compile_model(model, _ov_device(spec.device), _config(spec))
        details = _details(spec, model, compiled, from_artifact)
        return OpenVinoModel(model, compiled, spec, details)


def _details(spec: LoadSpec, model: Any, compiled: Any, from_artifact: bool) -> dict[str, str]:
    """What was applied, read back from the compiled model rather than from what was asked."""
    details = {
        "device": _ov_device(spec.device),
        "execution_devices": ",".join(compiled.get_property("EXECUTION_DEVICES")),
        "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
        "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name(),
    }
    with contextlib.suppress(Exception):  # a CPU property; GPUs do not report it
        details["num_threads"] = str(compiled.get_property("INFERENCE_NUM_THREADS"))
    if spec.precision == "int8":
        details["quantization"] = "nncf (saved artifact)" if from_artifact else "nncf"
        if not from_artifact:
            details["calibration_samples"] = str(len(spec.calibration))
        details["fake_quantize_ops"] = str(_count_ops(model, "FakeQuantize"))
        details["int8_kernels"] = _int8_kernels(compiled)
    else:
        details["quantization"] = "none"
    return details
