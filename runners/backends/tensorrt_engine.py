"""ONNX -> TensorRT engine: parse, profile, build with a timing cache, then run the engine on a CUDA stream.

The build follows a PrecisionPlan (tensorrt_onnx) and the options and profiles of tensorrt_options. TensorRT and
cuda-python are imported inside the functions, as in every backend module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import ARTIFACT_OPTION, Artifact, LoadedModel, LoadSpec, TensorInfo, device_index
from runners.backends.tensorrt_cuda import cuda_call, device_name, import_cudart
from runners.backends.tensorrt_onnx import has_qdq, onnx_tensor_infos, precision_plan, prepare_onnx
from runners.backends.tensorrt_options import TrtOptions, build_profiles
from speedster_run.shared.errors import CandidateError, mentions_out_of_memory

ENGINE_FORMAT = "tensorrt_engine"  # a saved engine's format: reloaded as it is, valid for one GPU model only
ENGINE_FILE = "model.engine"
IO_FILE = "model.io.json"  # inputs/outputs as the ONNX model names them: an engine keeps no dim names


def parser_failure(errors: list[str]) -> CandidateError:
    """The ONNX parser's errors as one compile failure: the first in the message, all of them in the detail."""
    lines = [" ".join(str(e).split()) for e in errors if str(e).strip()] or ["the ONNX parser failed without an error"]
    unsupported = next((line for line in lines if re.search(r"no importer|unsupported|not supported", line, re.I)), "")
    first = unsupported or lines[0]
    more = f" (+{len(lines) - 1} more)" if len(lines) > 1 else ""
    return CandidateError("compile", f"TensorRT cannot parse the ONNX model: {first[:300]}{more}",
                          detail="\n".join(lines))


def build_failure(logged_errors: list[str]) -> CandidateError:
    """build_serialized_network returned None: the logger's last errors say why."""
    text = " ".join(logged_errors[-3:]) or "the builder returned no engine"
    category = "oom" if mentions_out_of_memory(text) else "compile"
    return CandidateError(category, f"TensorRT engine build failed: {text[:400]}", detail="\n".join(logged_errors))


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


def _timing_cache_path(trt: Any, options: TrtOptions, spec: LoadSpec, gpu_name: str) -> Path:
    """One timing cache per TensorRT version and GPU model: TensorRT refuses a cache from another of either."""
    directory = Path(options.cache_dir) if options.cache_dir else spec.workdir / "tensorrt-cache"
    directory.mkdir(parents=True, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower() or "gpu"
    return directory / f"timing-trt{trt.__version__}-{gpu}.cache"


def load_engine(spec: LoadSpec, options: TrtOptions) -> LoadedModel:
    """Builds an engine from the ONNX model, or deserialises one this backend saved."""
    import tensorrt as trt

    cudart = import_cudart()
    cuda_call(cudart, cudart.cudaSetDevice(device_index(spec.device)))
    logger = _logger(trt)
    if spec.format == ENGINE_FORMAT:
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
    cache_path = _timing_cache_path(trt, options, spec, device_name(cudart, device_index(spec.device)))
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
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes allocated)
        self._names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._input_names = [n for n in self._names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._output_names = [n for n in self._names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                cuda_call(self._cudart, self._cudart.cudaFree(pointer))
            pointer = int(cuda_call(self._cudart, self._cudart.cudaMalloc(max(nbytes, 1))))
            self._buffers[name] = (pointer, max(nbytes, 1))
        return pointer

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copies inputs in, executes on the stream, copies outputs back, and waits for the stream."""
        trt, cudart, context = self._trt, self._cudart, self._context
        missing = [name for name in self._input_names if name not in feeds]
        if missing:
            raise CandidateError("runtime", f"missing inputs: {', '.join(missing)}")
        host_in = {}
        for name in self._input_names:
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            host_in[name] = np.ascontiguousarray(feeds[name], dtype=dtype)
            context.set_input_shape(name, host_in[name].shape)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in host_in.items():
            pointer = self._buffer(name, array.nbytes)
            cuda_call(cudart, cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self._stream))
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
            cuda_call(cudart, cudart.cudaMemcpyAsync(array.ctypes.data, self._buffers[name][0], array.nbytes, d2h,
                                                     self._stream))
        cuda_call(cudart, cudart.cudaStreamSynchronize(self._stream))
        return results

    def save(self, directory: Path) -> Artifact:
        """The serialised engine (valid for this GPU model and TensorRT version only) and the I/O specs."""
        (directory / ENGINE_FILE).write_bytes(self._engine_bytes)
        write_io(directory / IO_FILE, self.inputs, self.outputs)
        return Artifact(ENGINE_FORMAT, ENGINE_FILE, self._spec.precision, self._spec.variant,
                        {ARTIFACT_OPTION: "true"}, (ENGINE_FILE, IO_FILE))

    def close(self) -> None:
        """Frees device buffers and the stream before the engine goes."""
        for pointer, _ in self._buffers.values():
            self._cudart.cudaFree(pointer)
        self._buffers.clear()
        if self._stream is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = self._engine = None
