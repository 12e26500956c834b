"""TensorRT backend: ONNX models built into TensorRT engines on NVIDIA GPUs (fp32, fp16, int8 by explicit Q/DQ
quantisation), and torch.export programs compiled by Torch-TensorRT.

The parts that need no GPU (option parsing, optimisation profiles, precision plans, the ONNX passes, error mapping)
are plain functions, so that they are tested on machines without TensorRT.

int8: TensorRT 10.1 deprecated implicit quantisation (IInt8EntropyCalibrator2 and friends) in favour of explicit
quantisation, and TensorRT 11 removed it along with the precision flags. So int8 here is always explicit: a model that
already has QuantizeLinear/DequantizeLinear nodes is built as it is; otherwise Q/DQ nodes are inserted on the
calibration samples (ONNX Runtime's QDQ quantiser, symmetric int8 as TensorRT requires), and the network is built
strongly typed, without precision flags, as TensorRT's documentation recommends for Q/DQ models.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import (Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer, TensorInfo,
                                   device_index, device_kind)
from speedster_run.shared.errors import CandidateError

IMAGE = "speedster-run/tensorrt"
NOT_INSTALLED = f"TensorRT is not installed (GPU only: use the image {IMAGE} on a CUDA host)"
NO_DEVICE = "no CUDA device"
ENGINE_FILE = "model.engine"
IO_FILE = "model.io.json"  # inputs/outputs as the ONNX model names them: an engine keeps no dim names
ONNX_MODES = {("fp32", "default"), ("fp16", "default"), ("int8", "qdq")}
TORCH_MODES = {("fp32", "torch"), ("fp16", "torch")}
CALIBRATION_METHODS = ("entropy", "minmax", "percentile")
_OOM_MARKERS = ("out of memory", "outofmemory", "cudaerrormemoryallocation", "failed to allocate", "bad_alloc")
_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


# --- options, profiles, precision plans: pure, tested without TensorRT ---------------------------------------------

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TrtOptions:
    """The LoadSpec options this backend reads; unknown keys are ignored, as in the other backends."""

    profile: dict[str, tuple[Shape, Shape, Shape]] | None = None  # input name -> (min, opt, max)
    workspace_bytes: int = 0  # 0: TensorRT's default (the device's memory)
    cache_dir: str = ""  # where the timing cache lives; "" -> <workdir>/tensorrt-cache
    calibration_method: str = "entropy"  # how Q/DQ scales are chosen when int8 inserts them
    builder_optimization_level: int | None = None  # 0..5; TensorRT's default is 3
    artifact: bool = False  # the model file is an engine this backend saved


def parse_options(options: dict[str, str]) -> TrtOptions:
    """TrtOptions from LoadSpec.options; a malformed value fails the candidate as "compile"."""
    parsed: dict[str, Any] = {"artifact": options.get("artifact") == "true", "cache_dir": options.get("cache_dir", "")}
    if "profile" in options:
        parsed["profile"] = _parse_profile(options["profile"])
    if "workspace_mb" in options:
        parsed["workspace_bytes"] = _positive_int(options["workspace_mb"], "workspace_mb") << 20
    method = options.get("calibration_method", "entropy")
    if method not in CALIBRATION_METHODS:
        raise CandidateError("compile", f"calibration_method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    parsed["calibration_method"] = method
    if "builder_optimization_level" in options:
        level = _positive_int(options["builder_optimization_level"], "builder_optimization_level", minimum=0)
        if level > 5:
            raise CandidateError("compile", f"builder_optimization_level {level} is not in 0..5")
        parsed["builder_optimization_level"] = level
    return TrtOptions(**parsed)


def _positive_int(text: str, key: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise CandidateError("compile", f"{key} must be an integer >= {minimum}, got {text!r}")
    return value


def _parse_profile(text: str) -> dict[str, tuple[Shape, Shape, Shape]]:
    """'{"x": [[1,3,224,224], [8,3,224,224], [32,3,224,224]]}' -> {"x": (min, opt, max)}."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise CandidateError("compile", f"option profile is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise CandidateError("compile", 'option profile must map input names to [min, opt, max] shapes')
    profile = {}
    for name, shapes in raw.items():
        if not (isinstance(shapes, list) and len(shapes) == 3 and all(
                isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
                for s in shapes)):
            raise CandidateError("compile", f"profile of {name!r} must be [min, opt, max], three lists of positive "
                                            f"integers, got {shapes!r}")
        profile[name] = tuple(tuple(s) for s in shapes)
    return profile


def build_profiles(inputs: list[TensorInfo], options: TrtOptions,
                   calibration: list[dict[str, np.ndarray]]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shapes for every input with a symbolic dim, which a TensorRT engine needs.

    From the "profile" option where it names the input, else from the calibration samples (min and max per dim, opt
    the most frequent shape). Static inputs need no profile. Every shape is checked against the model's rank and
    static dims, and min <= opt <= max, so that a bad profile fails here with its input's name.
    """
    given = options.profile or {}
    unknown = sorted(set(given) - {i.name for i in inputs})
    if unknown:
        raise CandidateError("compile", f"profile names inputs the model lacks: {', '.join(unknown)} "
                                        f"(inputs: {', '.join(i.name for i in inputs)})")
    profiles = {}
    for info in inputs:
        if info.name in given:
            shapes = given[info.name]
        elif None not in info.shape:
            continue
        else:
            shapes = _profile_from_samples(info, calibration)
        _check_profile(info, shapes)
        profiles[info.name] = shapes
    return profiles


def _profile_from_samples(info: TensorInfo, calibration: list[dict[str, np.ndarray]]) -> tuple[Shape, Shape, Shape]:
    shapes = [tuple(int(d) for d in np.shape(sample[info.name])) for sample in calibration if info.name in sample]
    if not shapes:
        dims = ", ".join(n or "?" for n, d in zip(info.dim_names or ("",) * len(info.shape), info.shape) if d is None)
        raise CandidateError("compile", f"input {info.name!r} has symbolic dims ({dims}) and no sample gives its "
                                        f"shape: pass option profile={{\"{info.name}\": [min, opt, max]}}")
    if len({len(s) for s in shapes}) != 1:
        raise CandidateError("compile", f"the samples of input {info.name!r} differ in rank: {sorted(set(shapes))}")
    low = tuple(min(dims) for dims in zip(*shapes))
    high = tuple(max(dims) for dims in zip(*shapes))
    opt = collections.Counter(shapes).most_common(1)[0][0]
    return low, opt, high


def _check_profile(info: TensorInfo, shapes: tuple[Shape, Shape, Shape]) -> None:
    low, opt, high = shapes
    for label, shape in zip(("min", "opt", "max"), shapes):
        if len(shape) != len(info.shape):
            raise CandidateError("compile", f"profile {label} shape {list(shape)} of input {info.name!r} has rank "
                                            f"{len(shape)}, the model's has {len(info.shape)}")
        fixed = [(i, d, s) for i, (d, s) in enumerate(zip(info.shape, shape)) if d is not None and d != s]
        if fixed:
            axis, want, got = fixed[0]
            raise CandidateError("compile", f"profile {label} shape of input {info.name!r} has {got} at axis {axis}, "
                                            f"where the model fixes {want}")
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise CandidateError("compile", f"profile of input {info.name!r} needs min <= opt <= max per dim, got "
                                        f"{list(low)}, {list(opt)}, {list(high)}")


@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """How one precision is built: the ONNX pass before parsing, the network's typing, the builder flags."""

    onnx_pass: str  # "none", "fp16" (weights and compute to float16, fp32 I/O), "qdq" (insert Q/DQ nodes)
    strongly_typed: bool  # the ONNX graph's types decide every layer's precision
    set_flags: tuple[str, ...]  # BuilderFlag names
    clear_flags: tuple[str, ...]  # BuilderFlag names, cleared where this TensorRT still has them

    def describe(self) -> str:
        typing = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = "+".join(self.set_flags) or "no precision flags"
        return f"{typing}, {flags}, ONNX pass: {self.onnx_pass}"


def precision_plan(precision: str, trt_major: int, has_qdq: bool) -> PrecisionPlan:
    """The build recipe for a precision on a TensorRT major version.

    fp32 clears TF32, which TensorRT enables by default on Ampere and newer: the candidate says fp32, so it computes
    in fp32. fp16 on TensorRT 10 is the FP16 flag (TensorRT picks fp16 kernels where faster, I/O stays fp32); TensorRT
    11 removed the flag, so there the model is converted to float16 first and built strongly typed. int8 is explicit
    quantisation, always strongly typed and without flags.
    """
    if precision == "int8":
        return PrecisionPlan("none" if has_qdq else "qdq", True, (), ())
    if precision == "fp16":
        if trt_major >= 11:
            return PrecisionPlan("fp16", True, (), ())
        return PrecisionPlan("none", False, ("FP16",), ())
    if precision == "fp32":
        return PrecisionPlan("none", trt_major >= 11, (), ("TF32",))
    raise CandidateError("unavailable", f"tensorrt has no {precision} mode")


def parser_failure(errors: list[str]) -> CandidateError:
    """The ONNX parser's errors as one compile failure: the first in the message, all of them in the detail."""
    lines = [" ".join(str(e).split()) for e in errors if str(e).strip()] or ["the ONNX parser failed without an error"]
    unsupported = next((line for line in lines if re.search(r"no importer|unsupported|not supported", line, re.I)), "")
    first = unsupported or lines[0]
    more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
    return CandidateError("compile", f"TensorRT cannot parse the ONNX model: {first[:300]}{more}",
                          detail="\n".join(lines))


def library_failure(category: str, error: BaseException, what: str = "") -> CandidateError:
    """Wraps a TensorRT/CUDA error; running out of host or device memory is "oom" at any stage."""
    text = str(error).strip()
    if isinstance(error, MemoryError) or any(marker in text.lower() for marker in _OOM_MARKERS):
        category = "oom"
    first = text.splitlines()[0][:300] if text else ""
    detail = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return CandidateError(category, f"{what}{type(error).__name__}: {first}", detail=detail)


def build_failure(logged_errors: list[str]) -> CandidateError:
    """build_serialized_network returned None: the logger's last errors say why."""
    text = " ".join(logged_errors[-3:]) or "the builder returned no engine"
    category = "oom" if any(marker in text.lower() for marker in _OOM_MARKERS) else "compile"
    return CandidateError(category, f"TensorRT engine build failed: {text[:400]}", detail="\n".join(logged_errors))


# --- ONNX side: tensor infos and the passes before parsing (onnx / onnxruntime, no TensorRT) -----------------------

def onnx_tensor_infos(model_path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs (initializers excluded) and outputs, symbolic dims as None with their names."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def info(value: Any) -> TensorInfo:
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        dims = list(tensor.shape.dim)
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        return TensorInfo(value.name, dtype, shape, tuple(d.dim_param for d in dims))

    inputs = [info(v) for v in graph.input if v.name not in initializers]
    return inputs, [info(v) for v in graph.output]


def has_qdq(model_path: Path) -> bool:
    """Whether the model is quantised already (QAT exports, ModelOpt output): then it is built as it is."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return any(node.op_type in _QDQ_OPS for node in graph.node)


def convert_fp16(source: Path, target: Path) -> Path:
    """Weights and compute in float16, inputs and outputs kept float32 (for strongly typed builds)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save_model(model, str(target))
    return target


def insert_qdq(source: Path, target: Path, calibration: list[dict[str, np.ndarray]], method: str) -> Path:
    """Q/DQ int8 model calibrated on the samples, in the form TensorRT's explicit quantisation takes.

    TensorRT's quantisation is symmetric, signed int8 with zero points of 0, for activations and weights alike, and
    biases stay floating point (TensorRT fuses them; it has no int32 DequantizeLinear for them). Per-channel weight
    scales keep convolution accuracy. The quantiser runs on ONNX Runtime's CPU provider.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise CandidateError("compile", "int8 needs calibration samples to place Q/DQ scales (or a model that has "
                                        "QuantizeLinear/DequantizeLinear nodes already)")
    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    quantize_static(str(source), str(target), _samples_reader(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=methods[method],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    return target


def _samples_reader(samples: list[dict[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._samples, None)

    return _Reader()


def prepare_onnx(spec: LoadSpec, plan: PrecisionPlan, options: TrtOptions) -> tuple[Path, str]:
    """The ONNX file the parser reads, after the plan's pass, and what was done to it."""
    source = Path(spec.model_path)
    if plan.onnx_pass == "none":
        return source, "as given" if spec.precision != "int8" else "Q/DQ nodes of the model"
    spec.workdir.mkdir(parents=True, exist_ok=True)
    target = spec.workdir / f"{source.stem}.{plan.onnx_pass}.onnx"
    target.unlink(missing_ok=True)
    if plan.onnx_pass == "fp16":
        return convert_fp16(source, target), "converted to float16 (fp32 inputs/outputs)"
    insert_qdq(source, target, spec.calibration, options.calibration_method)
    return target, (f"Q/DQ inserted: symmetric int8, per-channel weights, {options.calibration_method} over "
                    f"{len(spec.calibration)} samples")


# --- the backend --------------------------------------------------------------------------------------------------

def _import_cudart() -> Any:
    """cuda-python's runtime module: cuda.bindings.runtime from 12.6 on, cuda.cudart before."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def _cuda_call(cudart: Any, result: Any) -> Any:
    """Checks a cuda-python call's (error, *values) result; returns the value(s)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(error)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


def _cuda_device_count() -> tuple[int, str]:
    """(GPUs, "") or (0, why not)."""
    try:
        cudart = _import_cudart()
    except ImportError as error:
        return 0, f"cuda-python is not installed ({error}); use the image {IMAGE}"
    error, count = cudart.cudaGetDeviceCount()
    if error != cudart.cudaError_t.cudaSuccess or count == 0:
        return 0, NO_DEVICE
    return count, ""


class TensorRtBackend(Backend):
    """NVIDIA TensorRT: engines built from ONNX; Torch-TensorRT for torch.export programs where it is installed."""

    name = "tensorrt"

    def probe(self) -> Availability:
        """Fast when TensorRT is missing (one failed import); otherwise versions, CUDA devices and offers."""
        try:
            import tensorrt as trt
        except (ImportError, OSError):
            return Availability(False, NOT_INSTALLED)
        count, why = _cuda_device_count()
        if not count:
            return Availability(False, why, versions={"tensorrt": trt.__version__})
        versions = {"tensorrt": trt.__version__}
        offers = [
            Offer("fp32", "default", ("cuda",), ("onnx",), "TensorRT engine, fp32 (TF32 off)"),
            Offer("fp16", "default", ("cuda",), ("onnx",), "TensorRT engine with fp16 kernels, fp32 I/O"),
            Offer("int8", "qdq", ("cuda",), ("onnx",),
                  "explicit int8: Q/DQ nodes (calibrated if absent), strongly typed"),
        ]
        torch_trt = _torch_tensorrt_version()
        if torch_trt:
            versions["torch_tensorrt"] = torch_trt
            offers += [Offer(p, "torch", ("cuda",), ("torch_export",), f"Torch-TensorRT (dynamo), {p}")
                       for p in ("fp32", "fp16")]
        return Availability(True, versions=versions, devices=tuple(f"cuda:{i}" for i in range(count)),
                            offers=tuple(offers))

    def load(self, spec: LoadSpec) -> LoadedModel:
        """Builds (or, for an artifact, deserialises) an engine; Torch-TensorRT for the "torch" variant."""
        _check_request(spec)
        options = parse_options(spec.options)
        try:
            if spec.variant == "torch":
                return _load_torch_tensorrt(spec, options)
            return _load_engine(spec, options)
        except CandidateError:
            raise
        except Exception as error:  # noqa: BLE001 - any library failure fails only this candidate
            raise library_failure("compile", error) from error


def _check_request(spec: LoadSpec) -> None:
    """Refuses, as "unavailable", what this backend cannot serve at all."""
    if device_kind(spec.device) != "cuda":
        raise CandidateError("unavailable", f"tensorrt runs on CUDA devices, not {spec.device!r}")
    modes = TORCH_MODES if spec.variant == "torch" else ONNX_MODES
    wanted_format = "torch_export" if spec.variant == "torch" else "onnx"
    if (spec.precision, spec.variant) not in modes:
        raise CandidateError("unavailable", f"tensorrt has no {spec.precision}/{spec.variant} mode")
    # A saved engine is format "tensorrt_engine"; a saved Torch-TensorRT program stays torch_export.
    if spec.format not in (wanted_format, "tensorrt_engine"):
        raise CandidateError("unavailable", f"tensorrt {spec.variant} builds from {wanted_format}, not {spec.format!r}")


def _torch_tensorrt_version() -> str:
    try:
        import torch
        import torch_tensorrt
    except Exception:  # noqa: BLE001 - absent, or broken against this torch: then it is simply not offered
        return ""
    return torch_tensorrt.__version__ if torch.cuda.is_available() else ""


def _logger(trt: Any) -> Any:
    """A TensorRT logger that keeps errors (for failure messages) and drops the rest below warnings."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)

    return _Logger()


def _timing_cache_path(trt: Any, options: TrtOptions, spec: LoadSpec, device_name: str) -> Path:
    """One timing cache per TensorRT version and GPU model: TensorRT refuses a cache from another of either."""
    directory = Path(options.cache_dir) if options.cache_dir else spec.workdir / "tensorrt-cache"
    directory.mkdir(parents=True, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower() or "gpu"
    return directory / f"timing-trt{trt.__version__}-{gpu}.cache"


def _device_name(cudart: Any, index: int) -> str:
    props = _cuda_call(cudart, cudart.cudaGetDeviceProperties(index))
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")


def _load_engine(spec: LoadSpec, options: TrtOptions) -> LoadedModel:
    import tensorrt as trt

    cudart = _import_cudart()
    _cuda_call(cudart, cudart.cudaSetDevice(device_index(spec.device)))
    logger = _logger(trt)
    if options.artifact or spec.format == "tensorrt_engine":
        engine_bytes = Path(spec.model_path).read_bytes()
        inputs, outputs = _read_io(Path(spec.model_path).with_name(IO_FILE))
        details = {"source": "artifact", "precision_plan": f"as saved ({spec.precision} {spec.variant})"}
    else:
        inputs, outputs = onnx_tensor_infos(spec.model_path)
        engine_bytes, details = _build(trt, cudart, logger, spec, options, inputs)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise CandidateError("compile", f"TensorRT could not deserialise the engine: {' '.join(logger.errors[-2:])}")
    details.update({"tensorrt": trt.__version__, "device": spec.device})
    return TrtEngineModel(trt, cudart, runtime, engine, bytes(engine_bytes), spec, inputs, outputs, details)


def _build(trt: Any, cudart: Any, logger: Any, spec: LoadSpec, options: TrtOptions,
           inputs: list[TensorInfo]) -> tuple[bytes, dict[str, str]]:
    """ONNX -> serialised engine: plan, pass, parse, profile, timing cache, build."""
    major = int(trt.__version__.split(".")[0])
    plan = precision_plan(spec.precision, major, has_qdq(spec.model_path))
    profiles = build_profiles(inputs, options, spec.calibration)
    onnx_path, onnx_note = prepare_onnx(spec, plan, options)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # by path: the parser finds external data beside the file
        raise parser_failure([str(parser.get_error(i)) for i in range(parser.num_errors)])
    config = builder.create_builder_config()
    for flag in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in plan.clear_flags:
        if hasattr(trt.BuilderFlag, flag):
            config.clear_flag(getattr(trt.BuilderFlag, flag))
    if options.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    if profiles:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profiles.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    cache_path = _timing_cache_path(trt, options, spec, _device_name(cudart, device_index(spec.device)))
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise build_failure(logger.errors)
    cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    details = {"source": "model", "onnx": onnx_note, "precision_plan": plan.describe(),
               "profiles": json.dumps({k: [list(s) for s in v] for k, v in profiles.items()}) if profiles else "none",
               "timing_cache": str(cache_path)}
    return bytes(memoryview(serialized)), details


def _read_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    from speedster_run.shared.torch_io import specs_from_json

    data = json.loads(path.read_text())
    return specs_from_json(json.dumps(data["inputs"])) or [], specs_from_json(json.dumps(data["outputs"])) or []


def write_io(path: Path, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> None:
    from speedster_run.shared.torch_io import specs_to_json

    path.write_text(json.dumps({"inputs": json.loads(specs_to_json(inputs)),
                                "outputs": json.loads(specs_to_json(outputs))}))


class TrtEngineModel(LoadedModel):
    """A deserialised engine with one execution context, one stream and device buffers reused across runs."""

    def __init__(self, trt: Any, cudart: Any, runtime: Any, engine: Any, engine_bytes: bytes, spec: LoadSpec,
                 inputs: list[TensorInfo], outputs: list[TensorInfo], details: dict[str, str]):
        self._trt, self._cudart, self._runtime, self._engine = trt, cudart, runtime, engine
        self._engine_bytes, self._spec = engine_bytes, spec
        self.inputs, self.outputs, self.details = inputs, outputs, details
        self._context = engine.create_execution_context()
        self._stream = _cuda_call(cudart, cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes allocated)
        self._names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._output_names = [n for n in self._names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                _cuda_call(self._cudart, self._cudart.cudaFree(pointer))
            pointer = int(_cuda_call(self._cudart, self._cudart.cudaMalloc(max(nbytes, 1))))
            self._buffers[name] = (pointer, max(nbytes, 1))
        return pointer

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copies inputs in, executes on the stream, copies outputs back, and waits for the stream."""
        trt, cudart, context = self._trt, self._cudart, self._context
        try:
            host_in = {}
            for name in self._names:
                if self._engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                    continue
                dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
                host_in[name] = np.ascontiguousarray(feeds[name], dtype=dtype)
                context.set_input_shape(name, host_in[name].shape)
            h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            for name, array in host_in.items():
                pointer = self._buffer(name, array.nbytes)
                _cuda_call(cudart, cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self._stream))
                context.set_tensor_address(name, pointer)
            results = {}
            for name in self._output_names:
                shape = tuple(context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise CandidateError("runtime", f"output {name!r} has a data-dependent shape {shape}, which "
                                                    "this backend does not allocate")
                results[name] = np.empty(shape, np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))))
                context.set_tensor_address(name, self._buffer(name, results[name].nbytes))
            if not context.execute_async_v3(int(self._stream)):
                raise CandidateError("runtime", "TensorRT execution failed (execute_async_v3 returned False)")
            for name, array in results.items():
                _cuda_call(cudart, cudart.cudaMemcpyAsync(array.ctypes.data, self._buffers[name][0], array.nbytes,
                                                          d2h, self._stream))
            _cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream))
        except CandidateError:
            raise
        except KeyError as error:
            raise CandidateError("runtime", f"missing input {error}") from error
        except Exception as error:  # noqa: BLE001
            raise library_failure("runtime", error) from error
        return results

    def save(self, directory: Path) -> Artifact:
        """The serialised engine (valid for this GPU model and TensorRT version only) and the I/O specs."""
        (directory / ENGINE_FILE).write_bytes(self._engine_bytes)
        write_io(directory / IO_FILE, self.inputs, self.outputs)
        return Artifact("tensorrt_engine", ENGINE_FILE, self._spec.precision, self._spec.variant,
                        {"artifact": "true"}, (ENGINE_FILE, IO_FILE))

    def close(self) -> None:
        """Frees device buffers and the stream before the engine goes."""
        for pointer, _ in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = None


# --- Torch-TensorRT: torch.export programs -----------------------------------------------------------------------

TORCH_SAVED = "model.trt.pt2"


def _load_torch_tensorrt(spec: LoadSpec, options: TrtOptions) -> LoadedModel:
    """Compiles an ExportedProgram with torch_tensorrt.dynamo (or reloads a saved one) and runs it like torch."""
    import torch
    import torch_tensorrt

    from speedster_run.shared.torch_io import example_arrays, export_specs, load_export, to_torch

    ep, stored = load_export(spec.model_path, spec.device)
    inputs, outputs = export_specs(ep, stored)
    if options.artifact:  # torch_tensorrt's import registered the ops the saved program calls
        module = ep.module()
        details = {"source": "artifact"}
    else:
        profiles = build_profiles(inputs, options, spec.calibration)
        examples = example_arrays(inputs, spec.calibration)
        arg_inputs = [_torch_trt_input(torch_tensorrt, torch, info, array, profiles.get(info.name), spec.device)
                      for info, array in zip(inputs, examples)]
        precisions = {torch.float32} | ({torch.float16} if spec.precision == "fp16" else set())
        module = torch_tensorrt.dynamo.compile(ep, arg_inputs=arg_inputs, enabled_precisions=precisions,
                                               device=torch.device(spec.device))
        details = {"source": "model", "enabled_precisions": ",".join(sorted(str(p) for p in precisions))}
        details["example_shapes"] = json.dumps([list(a.shape) for a in examples])
        module.example = [to_torch(a, spec.device) for a in examples]
    details.update({"torch_tensorrt": torch_tensorrt.__version__, "torch": torch.__version__})
    return TorchTrtModel(module, spec, inputs, outputs, details)


def _torch_trt_input(torch_tensorrt: Any, torch: Any, info: TensorInfo, example: np.ndarray,
                     profile: tuple[Shape, Shape, Shape] | None, device: str) -> Any:
    """A torch_tensorrt.Input: a range where the dim is symbolic, else the example itself."""
    from speedster_run.shared.torch_io import to_torch

    if profile is None:
        return to_torch(example, device)
    low, opt, high = profile
    return torch_tensorrt.Input(min_shape=low, opt_shape=opt, max_shape=high, dtype=getattr(torch, info.dtype))


class TorchTrtModel(LoadedModel):
    """A Torch-TensorRT compiled module, called like the torch backend calls an exported module."""

    def __init__(self, module: Any, spec: LoadSpec, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 details: dict[str, str]):
        self._module, self._spec = module, spec
        self.inputs, self.outputs, self.details = inputs, outputs, details

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from speedster_run.shared.torch_io import flatten_outputs, to_numpy, to_torch

        try:
            with torch.inference_mode():
                result = self._module(*[to_torch(feeds[i.name], self._spec.device) for i in self.inputs])
                outputs = {name: to_numpy(value) for name, value in flatten_outputs(result)}
            torch.cuda.synchronize(self._spec.device)
        except KeyError as error:
            raise CandidateError("runtime", f"missing input {error}") from error
        except Exception as error:  # noqa: BLE001
            raise library_failure("runtime", error) from error
        return outputs

    def save(self, directory: Path) -> Artifact:
        """torch_tensorrt.save as an ExportedProgram: reloading needs torch_tensorrt imported, nothing rebuilt."""
        import torch_tensorrt

        example = getattr(self._module, "example", None)
        torch_tensorrt.save(self._module, str(directory / TORCH_SAVED), output_format="exported_program",
                            arg_inputs=example)
        return Artifact("torch_export", TORCH_SAVED, self._spec.precision, self._spec.variant, {"artifact": "true"},
                        (TORCH_SAVED,))
