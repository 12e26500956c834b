"""ONNX Runtime backend: fp32 sessions, fp16 conversion (CUDA) and int8 dynamic/static quantisation."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import (Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer, TensorInfo,
                                   device_index, device_kind, reloads_artifact)
from speedster_run.shared.errors import CandidateError, one_line

# Protobuf cannot serialise more than 2 GiB, so bigger models must keep their weights in external data files.
_PROTOBUF_LIMIT_BYTES = 2**31
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}
# ORT type strings whose numpy name differs from the part inside "tensor(...)".
_ORT_DTYPES = {"float": "float32", "double": "float64"}


class OnnxRuntimeBackend(Backend):
    """Runs ONNX models with ONNX Runtime on CPU or CUDA (optionally through TensorRT)."""

    name = "onnxruntime"

    def probe(self) -> Availability:
        """Reports ORT/onnx versions, CPU plus visible CUDA devices, and the precisions offered on each."""
        try:
            import onnxruntime as ort
        except (ImportError, OSError) as error:
            return Availability(available=False, reason=f"onnxruntime is not installed: {error}")
        try:
            import onnx
        except ImportError as error:
            return Availability(available=False, reason=f"onnx is not installed: {error}")
        gpus = _cuda_devices() if "CUDAExecutionProvider" in ort.get_available_providers() else []
        cuda = ("cuda",) if gpus else ()
        offers = [
            Offer("fp32", "default", ("cpu", *cuda), ("onnx",), "plain ONNX Runtime session"),
            Offer("int8", "dynamic", ("cpu",), ("onnx",), "quantize_dynamic, QInt8 weights"),
            Offer("int8", "static", ("cpu", *cuda), ("onnx",), "quantize_static, QDQ, calibrated"),
        ]
        if cuda:
            offers.insert(1, Offer("fp16", "default", cuda, ("onnx",), "float16 weights and compute, fp32 I/O"))
        if cuda and "TensorrtExecutionProvider" in ort.get_available_providers():
            offers += [Offer(p, "tensorrt", cuda, ("onnx",), f"TensorRT execution provider, {p} kernels")
                       for p in ("fp32", "fp16")]
        versions = {"onnxruntime": ort.__version__, "onnx": onnx.__version__}
        return Availability(available=True, versions=versions, devices=("cpu", *gpus), offers=tuple(offers))

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        """Converts or quantises the model as asked (unless it is a saved artifact), then opens a session."""
        _check_level(spec.options.get("graph_optimization_level", "all"))
        model_path, details = _prepare(spec)
        session, session_details = _make_session(model_path, spec)
        return OrtModel(session, model_path, spec, {**details, **session_details})


class OrtModel(LoadedModel):
    """An ONNX Runtime session plus the model file it runs."""

    def __init__(self, session: Any, model_path: Path, spec: LoadSpec, details: dict[str, str]):
        self._session = session
        self._model_path = model_path
        self._spec = spec
        self.details = details
        self.inputs = [_tensor_info(arg) for arg in session.get_inputs()]
        self.outputs = [_tensor_info(arg) for arg in session.get_outputs()]
        self._output_names = [info.name for info in self.outputs]

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous session.run."""
        return dict(zip(self._output_names, self._session.run(self._output_names, feeds)))

    def save(self, directory: Path) -> Artifact:
        """Copies the model file that runs and its external data, keeping the relative locations ORT resolves."""
        files = [self._model_path.name, *_external_files(self._model_path)]
        for name in files:
            target = directory / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self._model_path.parent / name, target)
        options = {"artifact": "true", "graph_optimization_level": self.details["graph_optimization_level"]}
        if "provider" in self._spec.options:  # TensorRT builds its engine at load time, so the choice must travel
            options["provider"] = self._spec.options["provider"]
        return Artifact("onnx", files[0], self._spec.precision, self._spec.variant, options, tuple(files))

    def close(self) -> None:
        """Drops the session so ORT frees its arenas now rather than at garbage collection."""
        self._session = None


def _cuda_devices() -> list[str]:
    """"cuda:N" per GPU ORT can see, counted without importing torch; assumes one GPU when nvidia-smi is absent."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
        count = sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.SubprocessError):
        count = 1
    # ORT's device_id indexes the visible devices only, so CUDA_VISIBLE_DEVICES caps the count.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip() and not v.strip().startswith("-")]))
    return [f"cuda:{index}" for index in range(count)]


def _check_level(level: str) -> None:
    """A graph_optimization_level option ORT does not have fails the candidate before any work."""
    if level not in _OPT_LEVELS:
        raise CandidateError("compile", f"graph_optimization_level {level!r} is not one of {', '.join(_OPT_LEVELS)}")


def _prepare(spec: LoadSpec) -> tuple[Path, dict[str, str]]:
    """The model file to open: the input itself, or an fp16/int8 version of it written into spec.workdir."""
    source = Path(spec.model_path)
    if reloads_artifact(spec):
        return source, {"source": "artifact", "quantization": f"as saved ({spec.precision} {spec.variant})"}
    if spec.precision == "fp32":
        return source, {"source": "model", "quantization": "none"}
    if spec.variant == "tensorrt":  # TensorRT picks fp16 kernels itself (trt_fp16_enable): the model stays fp32
        return source, {"source": "model", "quantization": "none (TensorRT fp16 kernels, fp32 model)"}
    spec.workdir.mkdir(parents=True, exist_ok=True)
    target = _fresh(spec.workdir / f"{source.stem}.{spec.precision}-{spec.variant}.onnx")
    external = _needs_external_data(source)
    details = {"source": "model", "external_data": str(external).lower()}
    if spec.precision == "fp16":
        _convert_fp16(source, target, external)
        details["quantization"] = "none (fp16 conversion, fp32 inputs/outputs)"
    elif spec.variant == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        preprocessed, details["preprocess"] = _preprocess(source, spec.workdir, external)
        # Weights only: activations are quantised per batch at run time, so no calibration is needed.
        quantize_dynamic(preprocessed, target, weight_type=QuantType.QInt8, use_external_data_format=external)
        details["quantization"] = "int8 dynamic (QInt8 weights, activations quantised at run time)"
    else:
        details.update(_quantize_static(source, target, external, spec))
    details["quantized_ops"] = _op_summary(target)
    return target, details


def _fresh(path: Path) -> Path:
    """Removes a previous attempt's output: onnx appends external data to an existing file instead of replacing it."""
    for stale in (path, path.with_name(f"{path.name}.data")):
        stale.unlink(missing_ok=True)
    return path


def _convert_fp16(source: Path, target: Path, external: bool) -> None:
    """Casts weights and compute to float16; keep_io_types leaves the model's inputs and outputs in float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # onnx shape inference refuses protos over 2 GiB, so large models convert without it.
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True, disable_shape_infer=external)
    onnx.save_model(model, str(target), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=f"{target.name}.data")


def _preprocess(source: Path, workdir: Path, external: bool) -> tuple[Path, str]:
    """ORT's recommended pre-quantisation pass (shape inference, fusions). It also rebuilds stale value_info that
    some exporters write, which makes the quantizers' own shape inference fail. Skipped, and said so, if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    preprocessed = _fresh(workdir / f"{source.stem}.preprocessed.onnx")
    try:
        quant_pre_process(source, preprocessed, save_as_external_data=external, all_tensors_to_one_file=True,
                          external_data_location=f"{preprocessed.name}.data")
    except Exception as error:  # noqa: BLE001 - pre-processing only helps; quantise the original instead
        return _copy_into(source, workdir), f"skipped: {one_line(error)}"
    return preprocessed, "done"


def _copy_into(source: Path, workdir: Path) -> Path:
    """The model (and its external data) copied into workdir: the quantizers write "<model>-inferred.onnx" beside
    their input, and the model's own directory may be read-only (a container's mount)."""
    target = workdir / "original"
    target.mkdir(exist_ok=True)
    for name in (source.name, *_external_files(source)):
        shutil.copy2(source.parent / name, target / name)
    return target / source.name


def _quantize_static(source: Path, target: Path, external: bool, spec: LoadSpec) -> dict[str, str]:
    """QDQ int8 calibrated (MinMax) on spec.calibration, after ORT's recommended pre-processing."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not spec.calibration:
        raise CandidateError("compile", "static int8 needs calibration samples")
    details = {}
    preprocessed, details["preprocess"] = _preprocess(source, spec.workdir, external)
    # U8S8 (uint8 activations, int8 weights) in QDQ is what ORT recommends first on x86 CPUs: its fused int8
    # kernels (VPMADDUBSW / VNNI) take unsigned activations times signed weights. Per-channel weights keep Conv
    # accuracy. Without VNNI, U8S8 can saturate; reduce_range or U8U8 are the fallbacks if accuracy suffers.
    quantize_static(preprocessed, target, _calibration_reader(spec.calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    use_external_data_format=external)
    details["quantization"] = (f"int8 static QDQ (QUInt8 activations, per-channel QInt8 weights, "
                               f"MinMax over {len(spec.calibration)} samples)")
    return details


def _calibration_reader(samples: list[dict[str, np.ndarray]]) -> Any:
    """A CalibrationDataReader over the samples (defined here since the base class lives in onnxruntime)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._samples, None)

        def rewind(self) -> None:
            self._samples = iter(samples)

    return _Reader()


def _make_session(model_path: Path, spec: LoadSpec) -> tuple[Any, dict[str, str]]:
    """An InferenceSession opened by path, so that ORT finds external data next to the model file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = spec.options.get("graph_optimization_level", "all")
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[level])
    if spec.threads > 0:
        options.intra_op_num_threads = spec.threads
    # One request at a time per runner: parallelism goes inside operators, not across graph branches.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = _providers(spec, ort.get_available_providers())
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    used = session.get_providers()
    # ORT silently falls back to CPU when a GPU provider fails to start; that would mislabel the candidate.
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if wanted not in used:
        raise CandidateError("unavailable", f"{wanted} did not start (ORT fell back to {', '.join(used)})")
    details = {"providers": ",".join(used), "graph_optimization_level": level,
               "intra_op_threads": str(spec.threads) if spec.threads > 0 else "default", "model_file": model_path.name}
    return session, details


def _providers(spec: LoadSpec, available: list[str]) -> list[Any]:
    """Execution providers in priority order for spec.device, refusing ones this ORT build lacks."""
    # The "provider" option (saved artifacts, user choice) asks for TensorRT as the "tensorrt" variant does.
    tensorrt = spec.variant == "tensorrt" or spec.options.get("provider") == "tensorrt"
    return execution_providers(spec.device, spec.precision, tensorrt, spec.workdir, available)


def execution_providers(device: str, precision: str, tensorrt: bool, workdir: Path,
                        available: list[str]) -> list[Any]:
    """[(provider, options) or name, ...] for InferenceSession, first choice first; CPU last as ORT's fallback for
    the nodes a GPU provider does not take. TensorRT keeps its engines and timing cache under workdir: rebuilding an
    engine for every session would cost minutes on big models."""
    if device_kind(device) == "cpu":
        return ["CPUExecutionProvider"]
    ids = {"device_id": device_index(device)}
    providers: list[Any] = [("CUDAExecutionProvider", ids), "CPUExecutionProvider"]
    if tensorrt:
        cache = str(workdir / "tensorrt-cache")
        providers.insert(0, ("TensorrtExecutionProvider", {
            **ids, "trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
            "trt_engine_cache_path": cache, "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}))
    for name in (p[0] for p in providers if isinstance(p, tuple)):
        if name not in available:
            raise CandidateError("unavailable", f"this onnxruntime build has no {name}")
    return providers


def _tensor_info(arg: Any) -> TensorInfo:
    """TensorInfo from an ORT NodeArg: "tensor(float)" -> "float32", symbolic or unknown dims -> None."""
    inner = arg.type[len("tensor("):-1] if arg.type.startswith("tensor(") else arg.type
    dims = list(arg.shape or [])
    shape = tuple(d if isinstance(d, int) else None for d in dims)
    dim_names = tuple(d if isinstance(d, str) else "" for d in dims)
    return TensorInfo(arg.name, _ORT_DTYPES.get(inner, inner), shape, dim_names)


def _graph_tensors(graph: Any) -> list[Any]:
    """Every TensorProto of a graph, subgraphs included: initializers and tensor attributes."""
    tensors = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            tensors += ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                tensors += _graph_tensors(subgraph)
    return tensors


def _external_files(model_path: Path) -> list[str]:
    """External data files of a model, relative to its directory, read without loading the weights."""
    import onnx

    tensors = _graph_tensors(onnx.load(str(model_path), load_external_data=False).graph)
    external = [t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
    return sorted({entry.value for t in external for entry in t.external_data if entry.key == "location"})


def _needs_external_data(model_path: Path) -> bool:
    """Whether converted versions must be written with external data: the source has some, or is too big."""
    data_files = _external_files(model_path)
    size_bytes = model_path.stat().st_size + sum((model_path.parent / f).stat().st_size for f in data_files)
    return bool(data_files) or size_bytes > _PROTOBUF_LIMIT_BYTES


def _op_summary(model_path: Path) -> str:
    """"QuantizeLinear:3,..." counts of quantisation-related ops, to show that quantisation actually applied."""
    import onnx

    ops = [node.op_type for node in onnx.load(str(model_path), load_external_data=False).graph.node]
    counts = Counter(op for op in ops if "quant" in op.lower() or "Integer" in op or op.startswith("QLinear"))
    return ",".join(f"{op}:{n}" for op, n in sorted(counts.items())) or "none"
