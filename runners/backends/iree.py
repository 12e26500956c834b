"""IREE backend: ONNX imported to MLIR (iree-import-onnx), compiled ahead of time to a .vmfb for the host CPU
(llvm-cpu, run by the local-task HAL driver) or a CUDA GPU, then run by the IREE runtime.

fp32 is the model as written. fp16 and bf16 demote the inputs of matmuls and convolutions only
(--iree-global-opt-demote-contraction-inputs-*): accumulation, element-wise ops and the model's inputs and outputs stay
f32. IREE's whole-model demotion (--iree-input-demote-f32-to-f16) is not used: in IREE 3.13 it returns f16 buffers
labelled f32, so outputs would be read past their end.

The demotion pass rewrites named linalg contractions only. From O2 on, global optimisation generalises named matmuls
before that pass runs, so the reduced-precision variants turn generalisation off (--iree-opt-generalize-matmul=false).
Convolutions that channels-last rewriting or unit-dim folding made generic are still left alone, and a model may have
nothing left to demote: the program is compiled up to global optimisation first and checked for the demoted type
(iree_demotion), and a variant that would be fp32 under another name fails as "unavailable".

Symbolic input dims stay dynamic in the compiled module, which then serves any size. Where IREE fails to compile them,
the model is compiled again specialised to the first calibration sample's shapes (iree_shapes), and the details say so.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import (Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer, TensorInfo,
                                   device_index, device_kind)
from runners.backends.iree_demotion import DEMOTED_TYPE, check_demotion, type_mentions
from runners.backends.iree_shapes import STATIC_NAME, describe, sample_sizes, specialised_signature, write_specialised
from speedster_run.shared.errors import CandidateError, mentions_out_of_memory, one_line

ARTIFACT_FORMAT = "iree_vmfb"
FORMATS = ("onnx",)
# Models below this opset are upgraded first (onnx.version_converter, what iree-import-onnx's --opset-version does):
# IREE's ONNX lowering is written against recent operator versions.
MIN_OPSET = 17
VMFB_NAME = "model.vmfb"
SIDECAR_NAME = "model.json"  # inputs, outputs, entry function: a .vmfb does not say which names the tensors had
# Precision -> compiler flags. fp16/bf16 demote only contraction inputs (see the module docstring).
PRECISION_FLAGS = {
    "fp32": (),
    "fp16": ("--iree-global-opt-demote-contraction-inputs-type=f16",
             "--iree-global-opt-demote-contraction-inputs-operations=all", "--iree-opt-generalize-matmul=false"),
    "bf16": ("--iree-global-opt-demote-contraction-inputs-type=bf16",
             "--iree-global-opt-demote-contraction-inputs-operations=all", "--iree-opt-generalize-matmul=false"),
}
# The phase after which demoted contractions are visible in the IR, and from which compilation resumes.
DEMOTION_PHASE = "global-optimization"
PRECISION_NOTES = {
    "fp32": "none (f32 throughout)",
    "fp16": "matmul/conv inputs demoted to f16, f32 accumulation, element-wise ops and I/O in f32",
    "bf16": "matmul/conv inputs demoted to bf16, f32 accumulation, element-wise ops and I/O in f32",
}
# Lower precisions are offered on CPUs with native instructions only; elsewhere LLVM emulates them, slower than f32.
CPU_FLAGS = {"fp16": ("avx512_fp16",), "bf16": ("avx512_bf16", "amx_bf16")}
OPT_LEVELS = ("O0", "O1", "O2", "O3")
CHANNELS_LAST_FLAGS = [
    "--iree-preprocessing-pass-pipeline=builtin.module(util.func(iree-preprocessing-convert-conv-to-channels-last))",
    "--iree-global-opt-propagate-transposes=true", "--iree-opt-aggressively-propagate-transposes=true"]
# IREE's runtime default for --task_topology_max_group_count (worker threads of the local-task driver).
DEFAULT_MAX_GROUPS = 64
INSTALL_HINT = ("pip install 'speedster-run[iree]' (iree-base-compiler[onnx], iree-base-runtime), "
                "or use the image speedster-run/iree")


class IreeBackend(Backend):
    """IREE: ahead-of-time compilation of ONNX models for the host CPU or CUDA GPUs."""

    name = "iree"
    artifact_formats = (ARTIFACT_FORMAT,)

    def probe(self) -> Availability:
        """Versions, CPU plus CUDA devices the runtime can open, and the precisions offered on each."""
        try:
            import iree.compiler  # noqa: F401
            import iree.runtime  # noqa: F401
            import onnx
        except (ImportError, OSError) as error:
            return Availability(available=False, reason=f"iree is not installed ({error}): {INSTALL_HINT}")
        versions = {"iree-base-compiler": metadata.version("iree-base-compiler"),
                    "iree-base-runtime": metadata.version("iree-base-runtime"), "onnx": onnx.__version__}
        gpus = _cuda_devices()
        cuda = ("cuda",) if gpus else ()
        offers = [Offer("fp32", "default", ("cpu", *cuda), FORMATS, "llvm-cpu for the host CPU / cuda, f32")]
        cpu_flags = _cpu_flags()
        for precision in ("fp16", "bf16"):
            native = ("cpu",) if cpu_flags & set(CPU_FLAGS[precision]) else ()
            kinds = native + cuda
            if kinds:
                offers.append(Offer(precision, "default", kinds, FORMATS, PRECISION_NOTES[precision]))
        return Availability(available=True, versions=versions, devices=("cpu", *gpus), offers=tuple(offers))

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        """Imports and compiles the model (or opens a saved .vmfb), then loads it into the runtime."""
        if spec.format == ARTIFACT_FORMAT:
            vmfb, signature, details = _open_artifact(spec)
        else:
            vmfb, signature, details = _compile(spec)
        return IreeModel(vmfb, signature, spec, details)


class IreeModel(LoadedModel):
    """A compiled module loaded on one HAL device, with its entry function."""

    def __init__(self, vmfb: Path, signature: dict[str, Any], spec: LoadSpec, details: dict[str, str]):
        self._vmfb = vmfb
        self._signature = signature
        self._spec = spec
        self.inputs = [_info_from_json(item) for item in signature["inputs"]]
        self.outputs = [_info_from_json(item) for item in signature["outputs"]]
        self._device, self._context, self._function = _open_module(vmfb, signature["function"], spec)
        self.details = {**details, "hal_device": _hal_uri(spec.device), "function": signature["function"],
                        "threads": _threads_detail(spec)}

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One synchronous call; results are copied to numpy before the device arrays are released."""
        results = self._function(*self._arguments(feeds))
        results = results if isinstance(results, tuple) else (results,)
        # Copies: IREE's host arrays are views of device buffers, invalid once the module is released.
        arrays = [np.array(result.to_host(), copy=True) for result in results]
        if len(arrays) != len(self.outputs):
            raise CandidateError("runtime", f"the module returned {len(arrays)} results, the model has "
                                            f"{len(self.outputs)} outputs")
        return {info.name: array for info, array in zip(self.outputs, arrays)}

    def _arguments(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds in the function's argument order, names and fixed dims checked first for a clear message."""
        names = [info.name for info in self.inputs]
        if set(feeds) != set(names):
            raise CandidateError("runtime", f"inputs {sorted(feeds)} do not match the model's {sorted(names)}")
        args = []
        for info in self.inputs:
            array = np.ascontiguousarray(feeds[info.name])
            shape = array.shape
            if len(shape) != len(info.shape) or any(want not in (None, got) for want, got in zip(info.shape, shape)):
                wanted = ["?" if dim is None else dim for dim in info.shape]
                raise CandidateError("runtime", f"input {info.name!r} has shape {list(shape)}, the module takes "
                                                f"{wanted} (compiled for those dims)")
            args.append(array)
        return args

    def save(self, directory: Path) -> Artifact:
        """The compiled .vmfb, as is, plus the signature it needs to be called by tensor names."""
        directory = Path(directory)
        shutil.copyfile(self._vmfb, directory / VMFB_NAME)
        (directory / SIDECAR_NAME).write_text(json.dumps(self._signature, indent=1))
        options = {key: value for key, value in self._spec.options.items() if key != "artifact"}
        options["artifact"] = "true"
        return Artifact(ARTIFACT_FORMAT, VMFB_NAME, self._spec.precision, self._spec.variant, options,
                        (VMFB_NAME, SIDECAR_NAME))

    def close(self) -> None:
        """Function first, device last: IREE objects must not outlive what they reference."""
        self._function = None
        self._context = None
        self._device = None


# --- compiling -----------------------------------------------------------------------------------------------------

def _compile(spec: LoadSpec) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """ONNX -> (opset upgrade) -> MLIR (torch dialect) -> .vmfb in spec.workdir."""
    if device_kind(spec.device) == "cuda" and spec.device not in _cuda_devices():
        raise CandidateError("unavailable", f"iree's CUDA driver does not see {spec.device} (no GPU, or no libcuda)")
    base_flags = _target_flags(spec) + _optimization_flags(spec)
    flags = base_flags + list(PRECISION_FLAGS[spec.precision])
    spec.workdir.mkdir(parents=True, exist_ok=True)
    onnx_path, signature, details = _prepare_onnx(Path(spec.model_path), spec.workdir)
    mlir = spec.workdir / "model.mlir"
    vmfb = spec.workdir / VMFB_NAME
    _import_onnx(onnx_path, mlir)
    try:
        _compile_mlir(spec, mlir, vmfb, flags, base_flags, details)
    except CandidateError as error:
        if error.category != "compile" or details["dynamic_dims"] == "none":
            raise
        onnx_path, signature = _specialise(spec, onnx_path, signature, details, error)
        _import_onnx(onnx_path, mlir)
        _compile_mlir(spec, mlir, vmfb, flags, base_flags, details)
    signature["function"] = _entry_function(vmfb)
    details.update({"source": "model", "compile_flags": " ".join(flags), "quantization": "none",
                    "demotion": PRECISION_NOTES[spec.precision], "vmfb_bytes": str(vmfb.stat().st_size)})
    return vmfb, signature, details


def _compile_mlir(spec: LoadSpec, mlir: Path, vmfb: Path, flags: list[str], base_flags: list[str],
                  details: dict[str, str]) -> None:
    """The imported MLIR to a .vmfb: in one go for fp32, in two checked steps for a demoted precision."""
    if PRECISION_FLAGS[spec.precision]:
        details["demotion_check"] = _compile_demoted(spec, mlir, vmfb, flags, base_flags)
    else:
        _run_compiler(mlir, vmfb, flags)


def _specialise(spec: LoadSpec, onnx_path: Path, signature: dict[str, Any], details: dict[str, str],
                error: CandidateError) -> tuple[Path, dict[str, Any]]:
    """After a failed compile with dynamic dims: a copy of the model with them fixed to the first calibration
    sample's sizes, and the signature to match (see iree_shapes); the details say so, and why."""
    if not spec.calibration:
        raise CandidateError("compile", f"{error.message} (with dynamic dims {details['dynamic_dims']}; no "
                                        "calibration sample to specialise them to)", detail=error.detail) from None
    sizes = sample_sizes(signature["inputs"], spec.calibration[0])
    specialised = write_specialised(onnx_path, spec.workdir / STATIC_NAME, sizes)
    reason = error.message.removeprefix("iree-compile failed: ")[:160]
    details["shapes"] = (f"specialised to {describe(sizes, signature['inputs'])} (iree-compile failed on the "
                         f"dynamic dims {details['dynamic_dims']}: {reason})")
    details["dynamic_dims"] = "none (specialised)"
    return specialised, specialised_signature(signature, sizes)


def _compile_demoted(spec: LoadSpec, mlir: Path, vmfb: Path, flags: list[str], base_flags: list[str]) -> str:
    """Compiles in two steps, up to global optimisation and on from there, checking in between that the demotion
    changed the program (see the module docstring); returns what the check saw, for the details."""
    optimized = spec.workdir / f"model.{DEMOTION_PHASE}.mlir"
    _run_compiler(mlir, optimized, [*flags, f"--compile-to={DEMOTION_PHASE}"])

    def compile_reference() -> Path:
        reference = spec.workdir / f"model.{DEMOTION_PHASE}.fp32.mlir"
        _run_compiler(mlir, reference, [*base_flags, f"--compile-to={DEMOTION_PHASE}"])
        return reference

    check_demotion(spec.precision, mlir, optimized, compile_reference)
    _run_compiler(optimized, vmfb, [*flags, f"--compile-from={DEMOTION_PHASE}"])
    element_type = DEMOTED_TYPE[spec.precision]
    count = type_mentions(optimized.read_text(errors="replace"), element_type)
    return f"{count} mentions of {element_type} in the program after {DEMOTION_PHASE}"


def _prepare_onnx(source: Path, workdir: Path) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """The model's signature, and the file to import: the source, or an opset-upgraded copy of it."""
    import onnx

    # Without external data: only the graph's structure is needed unless the opset must change.
    model = onnx.load(str(source), load_external_data=False)
    signature = _signature(model)
    opset = _default_opset(model)
    details = {"opset": str(opset), "dynamic_dims": _dynamic_dims(signature["inputs"])}
    if opset >= MIN_OPSET:
        return source, signature, details
    try:
        from onnx import version_converter

        full = onnx.load(str(source))  # the converter needs the weights in memory
        upgraded = version_converter.convert_version(full, MIN_OPSET)
        target = workdir / "model.upgraded.onnx"
        large = full.ByteSize() > 2**31 - 2**26  # keep clear of protobuf's 2 GiB limit
        onnx.save_model(upgraded, str(target), save_as_external_data=large, location="model.upgraded.onnx.data")
    except Exception as error:  # noqa: BLE001 - importing the original may still work; say what happened
        details["opset"] = f"{opset} (upgrade to {MIN_OPSET} failed: {one_line(error)[:160]})"
        return source, signature, details
    details["opset"] = f"{opset} -> {MIN_OPSET}"
    return target, signature, details


def _default_opset(model: Any) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 1)


def _signature(model: Any) -> dict[str, Any]:
    """Inputs (initialisers excluded: they are weights, not arguments) and outputs, in the function's order."""
    weights = {tensor.name for tensor in model.graph.initializer}
    inputs = [_value_info_json(value) for value in model.graph.input if value.name not in weights]
    return {"inputs": inputs, "outputs": [_value_info_json(value) for value in model.graph.output]}


def _value_info_json(value: Any) -> dict[str, Any]:
    """A graph input/output as plain data: name, numpy dtype name, dims (None when symbolic), dim names."""
    from onnx import helper

    tensor_type = value.type.tensor_type
    if not value.type.HasField("tensor_type") or tensor_type.elem_type == 0:
        raise CandidateError("compile", f"graph input/output {value.name!r} is not a tensor of a known element "
                                        "type; iree imports typed tensors only")
    dims = list(tensor_type.shape.dim)
    return {"name": value.name, "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name,
            "shape": [dim.dim_value if dim.HasField("dim_value") else None for dim in dims],
            "dim_names": [dim.dim_param for dim in dims]}


def _info_from_json(item: dict[str, Any]) -> TensorInfo:
    return TensorInfo(item["name"], item["dtype"], tuple(item["shape"]), tuple(item["dim_names"]))


def _dynamic_dims(inputs: list[dict[str, Any]]) -> str:
    """Which input dims are dynamic: IREE compiles them as such unless that fails (then they are specialised)."""
    dynamic = [f"{item['name']}[{axis}]={item['dim_names'][axis] or '?'}"
               for item in inputs for axis, dim in enumerate(item["shape"]) if dim is None]
    return ",".join(dynamic) or "none"


def _import_onnx(onnx_path: Path, mlir: Path) -> None:
    """iree-import-onnx in a child process: its native code may abort, and that must stay a failed candidate.
    External data is read from beside the file (the source's, or the upgraded copy's)."""
    command = [sys.executable, "-m", "iree.compiler.tools.import_onnx", str(onnx_path), "-o", str(mlir)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stderr or result.stdout
        raise CandidateError(_category(output), f"iree-import-onnx failed: {_python_error(output)}",
                             detail=output[-20000:])


def _run_compiler(mlir: Path, vmfb: Path, flags: list[str]) -> None:
    """iree-compile (a child process started by iree.compiler); its diagnostics become the failure message."""
    from iree.compiler.tools import CompilerToolError, compile_file

    try:
        compile_file(str(mlir), output_file=str(vmfb), extra_args=flags)
    except CompilerToolError as error:
        raise CandidateError(_category(str(error)), f"iree-compile failed: {_diagnostic(str(error))}",
                             detail=str(error)[-20000:]) from None


def _target_flags(spec: LoadSpec) -> list[str]:
    """Compiler flags that choose the target: the host CPU's ISA, or a CUDA architecture."""
    if device_kind(spec.device) == "cpu":
        cpu = spec.options.get("target_cpu", "host")
        return ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
                f"--iree-llvmcpu-target-cpu={cpu}"]
    arch = spec.options.get("cuda_target") or _cuda_arch(device_index(spec.device))
    return ["--iree-hal-target-device=cuda", f"--iree-cuda-target={arch}"]


def _optimization_flags(spec: LoadSpec) -> list[str]:
    """IREE compiles at O0 unless told otherwise. On CPUs, NCHW convolutions are rewritten channels-last (with the
    transposes this adds pushed through the graph): IREE's CPU codegen is far better at NHWC (a small CNN here:
    3.5 ms -> 0.6 ms, onnxruntime 0.44 ms). Options: opt_level (O0-O3), channels_last (true/false), compile_flags
    (extra flags, space-separated)."""
    level = spec.options.get("opt_level", "O3")
    if level not in OPT_LEVELS:
        raise CandidateError("compile", f"opt_level {level!r} is not one of {', '.join(OPT_LEVELS)}")
    flags = [f"--iree-opt-level={level}"]
    if device_kind(spec.device) == "cpu" and spec.options.get("channels_last", "true") == "true":
        flags += CHANNELS_LAST_FLAGS
    return flags + shlex.split(spec.options.get("compile_flags", ""))


def _entry_function(vmfb: Path) -> str:
    """The model's function in the module: the one exported name that is neither `__init` nor an `$async` twin."""
    import iree.runtime as rt

    module = rt.VmModule.mmap(rt.VmInstance(), str(vmfb))
    names = [name for name in module.function_names if not name.startswith("__") and not name.endswith("$async")]
    if len(names) != 1:
        raise CandidateError("compile", f"expected one entry function in the module, found {names}")
    return names[0]


# --- loading -------------------------------------------------------------------------------------------------------

def _open_artifact(spec: LoadSpec) -> tuple[Path, dict[str, Any], dict[str, str]]:
    """A saved .vmfb and its sidecar: loaded as compiled, nothing is imported or compiled again."""
    vmfb = Path(spec.model_path)
    sidecar = vmfb.with_name(SIDECAR_NAME)
    if not sidecar.exists():
        raise CandidateError("compile", f"{SIDECAR_NAME} is missing beside {vmfb.name}: the artifact is incomplete")
    signature = json.loads(sidecar.read_text())
    details = {"source": "artifact", "quantization": "none", "demotion": PRECISION_NOTES[spec.precision],
               "vmfb_bytes": str(vmfb.stat().st_size)}
    return vmfb, signature, details


def _open_module(vmfb: Path, function: str, spec: LoadSpec) -> tuple[Any, Any, Any]:
    """A fresh HAL device (its worker count read from the flags now), a context holding the module, the function."""
    import iree.runtime as rt

    if device_kind(spec.device) == "cpu":
        # The worker count is a process-wide runtime flag, read when a local-task *driver* creates its thread pool.
        # rt.get_driver caches one driver per process (the first model's threads would bind every later one), so
        # each model gets its own driver, made just after the flag is set; its workers end when the model closes.
        groups = spec.threads if spec.threads > 0 else DEFAULT_MAX_GROUPS
        rt.flags.parse_flags(f"--task_topology_max_group_count={groups}")
        device = rt._binding.create_hal_driver("local-task").create_device_by_uri("local-task")
    else:
        try:
            driver = rt.get_driver("cuda")
            available = driver.query_available_devices()
        except Exception as error:  # noqa: BLE001 - no libcuda, no GPU
            raise CandidateError("unavailable", f"iree's CUDA driver did not start: {one_line(error)}") from None
        if device_index(spec.device) >= len(available):
            raise CandidateError("unavailable", f"iree's CUDA driver sees {len(available)} GPUs; no {spec.device}")
        device = driver.create_device(available[device_index(spec.device)])
    config = rt.Config(device=device)
    context = rt.SystemContext(config=config)
    module = rt.VmModule.mmap(config.vm_instance, str(vmfb))
    context.add_vm_module(module)
    return device, context, context.modules[module.name][function]


def _hal_uri(device: str) -> str:
    """The HAL driver, as named in details: local-task (a thread pool) for the CPU, cuda:N for GPU N."""
    return "local-task" if device_kind(device) == "cpu" else f"cuda:{device_index(device)}"


def _threads_detail(spec: LoadSpec) -> str:
    if device_kind(spec.device) != "cpu":
        return "n/a (gpu)"
    return f"{spec.threads} (--task_topology_max_group_count)" if spec.threads > 0 else "default (one per core)"


# --- devices -------------------------------------------------------------------------------------------------------

def _cpu_flags() -> set[str]:
    """The host CPU's feature flags (Linux); empty elsewhere, which offers fp32 only."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _cuda_devices() -> list[str]:
    """"cuda:N" per GPU IREE's CUDA driver opens; none (quickly) where libcuda is missing."""
    import iree.runtime as rt

    if "cuda" not in rt.query_available_drivers():
        return []
    try:
        devices = rt.get_driver("cuda").query_available_devices()
    except Exception:  # noqa: BLE001 - no libcuda / no GPU: the driver refuses to start
        return []
    return [f"cuda:{index}" for index in range(len(devices))]


def _cuda_arch(index: int) -> str:
    """sm_XY of GPU `index`, from nvidia-smi's compute capability."""
    try:
        listing = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, check=True)
        capability = listing.stdout.split()[index]
    except (OSError, subprocess.SubprocessError, IndexError):
        raise CandidateError("compile", "cannot read the GPU's compute capability (nvidia-smi); pass the option "
                                        "cuda_target=sm_XY") from None
    return "sm_" + capability.replace(".", "")


# --- errors --------------------------------------------------------------------------------------------------------

def _python_error(output: str) -> str:
    """The exception a Python tool died of, on one line: from the traceback's last `SomeError:` line to the end."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    chosen = lines[starts[-1]:] if starts else lines[-1:]
    return " ".join(chosen)[:400] or "(no output)"


def _diagnostic(output: str) -> str:
    """The compiler's first error, without the wrapper's header and the source location; an operator IREE cannot
    lower is named as such."""
    body = output.split("Diagnostics:", 1)[-1].split("Invoked with:", 1)[0]
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    chosen = errors[0].split("error:", 1)[1].strip() if errors else (lines[0] if lines else "(no output)")
    operator = re.search(r'name = "onnx\.(\w+)"', chosen)
    if operator and "legalize" in chosen:
        return f"ONNX operator {operator.group(1)} is not supported by IREE ({chosen[:200]})"
    return chosen[:400]


def _category(output: str) -> str:
    """A compiler tool's failure: "compile", or "oom" when its output says memory ran out."""
    return "oom" if mentions_out_of_memory(output) else "compile"


__all__ = ["IreeBackend", "IreeModel"]
