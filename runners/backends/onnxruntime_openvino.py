"""ONNX Runtime with OpenVINO's execution provider: ONNX models run through ORT's API, compiled by OpenVINO.

The OpenVINO EP ships in its own build of ONNX Runtime (the onnxruntime-openvino package), which replaces the plain
onnxruntime package: so it is its own backend, with its own image (speedster-run/onnxruntime-openvino). Sessions,
int8 quantisation (QDQ, which the EP runs as int8) and artifacts are those of the onnxruntime backend.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from runners.backends import onnxruntime as ort_backend
from runners.backends.base import (Availability, Backend, LoadedModel, LoadSpec, Offer, device_index, device_kind,
                                   reloads_artifact)
from speedster_run.shared.errors import CandidateError

PROVIDER = "OpenVINOExecutionProvider"
IMAGE = "speedster-run/onnxruntime-openvino"
NOT_INSTALLED = (f"onnxruntime-openvino is not installed: pip install onnxruntime-openvino (it replaces onnxruntime), "
                 f"or use the image {IMAGE}")
NO_PROVIDER = (f"this onnxruntime build has no {PROVIDER}: install onnxruntime-openvino in place of onnxruntime, or "
               f"use the image {IMAGE}")
# (precision, variant) -> the device kinds the EP runs it on.
_MODES = {("fp32", "default"): ("cpu", "gpu"), ("fp16", "default"): ("gpu",), ("int8", "static"): ("cpu",)}
# OpenVINO compiles the graph itself; ORT's own fusions would turn QDQ pairs into QLinear ops the EP does not take.
_DEFAULT_LEVEL = "disable"


def ov_device_type(device: str) -> str:
    """"cpu" -> "CPU", "gpu:1" -> "GPU.1": the EP's device_type."""
    return "CPU" if device_kind(device) == "cpu" else f"GPU.{device_index(device)}"


def provider_options(device: str, precision: str, threads: int, cache_dir: Path) -> dict[str, str]:
    """OpenVINO EP options: the device, its inference precision (fp16 only on GPUs), threads, the model cache."""
    options = {"device_type": ov_device_type(device), "precision": "FP16" if precision == "fp16" else "FP32",
               "cache_dir": str(cache_dir)}
    if threads > 0 and device_kind(device) == "cpu":
        options["num_of_threads"] = str(threads)
    return options


def runner_devices(ov_devices: list[str]) -> tuple[str, ...]:
    """OpenVINO device ids ("CPU", "GPU", "GPU.0", "NPU") -> runner names: "cpu" first, then "gpu:N"."""
    gpus = sorted({int(d.partition(".")[2] or 0) for d in ov_devices if d == "GPU" or d.startswith("GPU.")})
    return ("cpu", *(f"gpu:{i}" for i in gpus))


def offers_for(devices: tuple[str, ...]) -> tuple[Offer, ...]:
    """The modes the EP runs on these runner devices ("cpu", "gpu:N")."""
    kinds = {device_kind(d) for d in devices}
    return tuple(Offer(p, v, tuple(k for k in ks if k in kinds), ("onnx",), f"OpenVINO EP, {p} {v}")
                 for (p, v), ks in _MODES.items() if any(k in kinds for k in ks))


def _ov_devices(ort: Any) -> list[str]:
    """The EP's devices, from the build's pybind module (only the OpenVINO build has the function)."""
    listing = getattr(ort.capi._pybind_state, "get_available_openvino_device_ids", None)
    try:
        return list(listing()) if listing else ["CPU"]
    except Exception:  # noqa: BLE001 - listing failed: the CPU is always there
        return ["CPU"]


class OnnxRuntimeOpenVinoBackend(Backend):
    name = "onnxruntime-openvino"

    def probe(self) -> Availability:
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, NOT_INSTALLED)
        try:
            import onnx
            import onnxruntime as ort
        except (ImportError, OSError) as error:
            return Availability(False, f"onnxruntime does not import: {error}")
        if PROVIDER not in ort.get_available_providers():
            return Availability(False, NO_PROVIDER, versions={"onnxruntime": ort.__version__})
        devices = runner_devices(_ov_devices(ort))
        versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
        return Availability(True, versions=versions, devices=devices, offers=offers_for(devices))

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        model_path, details = _prepare(spec)
        session, session_details = _make_session(model_path, spec)
        return ort_backend.OrtModel(session, model_path, spec, {**details, **session_details})


def _prepare(spec: LoadSpec) -> tuple[Path, dict[str, str]]:
    """The onnxruntime backend's preparation (QDQ int8 for "static"); fp16 needs none: the EP computes in FP16."""
    if spec.precision == "fp16" and not reloads_artifact(spec):
        return Path(spec.model_path), {"source": "model", "quantization": "none (OpenVINO computes in FP16)"}
    return ort_backend._prepare(spec)


def _make_session(model_path: Path, spec: LoadSpec) -> tuple[Any, dict[str, str]]:
    """An InferenceSession on the OpenVINO EP, refusing ORT's silent fallback to its CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = spec.options.get("graph_optimization_level", _DEFAULT_LEVEL)
    ort_backend._check_level(level)
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ort_backend._OPT_LEVELS[level])
    options.inter_op_num_threads = 1
    if PROVIDER not in ort.get_available_providers():
        raise CandidateError("unavailable", NO_PROVIDER)
    ep_options = provider_options(spec.device, spec.precision, spec.threads, spec.workdir / "openvino-cache")
    session = ort.InferenceSession(str(model_path), sess_options=options,
                                   providers=[(PROVIDER, ep_options), "CPUExecutionProvider"])
    used = session.get_providers()
    if PROVIDER not in used:
        raise CandidateError("unavailable", f"{PROVIDER} did not start (ORT fell back to {', '.join(used)})")
    details = {"providers": ",".join(used), "graph_optimization_level": level, "model_file": model_path.name,
               **{f"openvino_{k}": v for k, v in ep_options.items() if k != "cache_dir"}}
    return session, details
