"""Apache TVM backend (Relax): ONNX or torch.export -> Relax -> LLVM (CPU) or CUDA, optionally MetaSchedule-tuned.

Variants:
- "default": TVM's default pipeline for the target. On CPU that is legalisation + fusion with TVM's generic (untuned)
  loop nests, much slower than ONNX Runtime on convolutions; on CUDA the dlight default GPU schedules.
- "tuned": MetaSchedule tuning within a trial and time budget (options `tune_trials` per task, `tune_budget_s`) of
  static shapes: symbolic dims take their sizes from the first calibration sample, or option `dims` ("batch=1").
  Records are cached per (model sha256, target, TVM version, shapes, trials) under SPEEDSTER_RUN_TVM_CACHE (option
  `tune_cache`, default ~/.cache/speedster-run/tvm), so loading the same model again compiles without tuning.
  The budget is checked after each measured batch, so tuning can overrun it by one batch (at most 16 candidates).

Threads: TVM's CPU thread pool is per calling thread and sized from TVM_NUM_THREADS when that thread first runs a
parallel loop, so `load` sets TVM_NUM_THREADS before any run, and `run` caps an older pool with
`runtime.config_threadpool`. TVM_BIND_THREADS defaults to 0 here: the pool would otherwise pin the caller's thread
(one of the runner's gRPC threads) to core 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import (Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer, TensorInfo,
                                   device_index, device_kind)
from speedster_run.shared.errors import CandidateError, one_line
from speedster_run.shared.files import sha256_file

FORMATS = ("onnx", "torch_export")
ARTIFACT_FORMAT = "tvm_module"
CACHE_ENV = "SPEEDSTER_RUN_TVM_CACHE"
DEFAULT_CACHE = Path("~/.cache/speedster-run/tvm")
DEFAULT_TRIALS = 64
DEFAULT_BUDGET_S = 600.0
INSTALL_HINT = "pip install 'speedster-run[tvm]', or use the image speedster-run/tvm"
# apache-tvm 0.27.0.post1 was built against tvm-ffi 0.1.14; with 0.1.15 MetaSchedule's TuneContext segfaults.
_FFI_BROKEN_FOR_TUNING = ("0.1.15",)
_ARTIFACT_FILES = ("model.so", "params.npz", "io.json")

# LLVM -mcpu names for x86 CPUs, most capable first: the first whose /proc/cpuinfo flags are all present wins.
# The model name is useless in VMs ("Intel(R) Xeon(R) Processor"), and LLVM's own host detection misnames some
# virtual CPUs (a Sapphire Rapids guest reported as "rocketlake", which has no AMX), so the flags decide.
_X86_MCPU: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("GenuineIntel", "graniterapids", frozenset({"amx_tile", "amx_fp16", "avx512_fp16"})),
    ("GenuineIntel", "sapphirerapids", frozenset({"amx_tile", "amx_bf16", "avx512_fp16"})),
    ("GenuineIntel", "icelake-server", frozenset({"avx512_vnni", "avx512_vbmi2", "avx512_bitalg", "avx512vl"})),
    ("GenuineIntel", "cooperlake", frozenset({"avx512_bf16", "avx512_vnni", "avx512bw"})),
    ("GenuineIntel", "cascadelake", frozenset({"avx512_vnni", "avx512bw", "avx512vl"})),
    ("GenuineIntel", "skylake-avx512", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})),
    ("AuthenticAMD", "znver5", frozenset({"avx512f", "avx512_vp2intersect", "avx_vnni"})),
    ("AuthenticAMD", "znver4", frozenset({"avx512f", "avx512_bf16", "avx512_vnni"})),
    ("", "x86-64-v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
    ("", "x86-64-v3", frozenset({"avx2", "fma", "bmi2", "movbe"})),
    ("", "x86-64-v2", frozenset({"sse4_2", "popcnt", "ssse3"})),
)


def host_mcpu(flags: set[str], vendor: str) -> str | None:
    """The most specific LLVM -mcpu the CPU flags support; None (LLVM's generic CPU) when no rule matches."""
    for rule_vendor, mcpu, needed in _X86_MCPU:
        if (not rule_vendor or rule_vendor == vendor) and needed <= flags:
            return mcpu
    return None


def _cpuinfo() -> tuple[set[str], str]:
    """Flags and vendor of the first CPU in /proc/cpuinfo (empty where there is none: not Linux, not x86)."""
    flags: set[str] = set()
    vendor = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return flags, vendor
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return flags, vendor


def _valid_mcpu(candidates: list[str]) -> str | None:
    """The first candidate LLVM accepts for the host triple (TVM only warns for an unknown one, then uses generic)."""
    from tvm.target import codegen

    triple = codegen.llvm_get_system_triple()
    for mcpu in candidates:
        if codegen.llvm_is_valid_cpu(mcpu, triple):
            return mcpu
    return None


def cpu_target_config(spec: LoadSpec) -> dict[str, Any]:
    """The LLVM target for this host: -mcpu from the CPU flags (option `mcpu` overrides), num-cores from threads."""
    wanted = spec.options.get("mcpu")
    if wanted is None:
        wanted = host_mcpu(*_cpuinfo())
    fallbacks = [m for _, m, _ in _X86_MCPU if m.startswith("x86-64")]
    chain = [wanted, *fallbacks] if wanted else []
    mcpu = _valid_mcpu(chain) if chain else None
    config: dict[str, Any] = {"kind": "llvm", "num-cores": _threads(spec)}
    if mcpu:
        config["mcpu"] = mcpu
    return config


def _threads(spec: LoadSpec) -> int:
    """Threads to use: spec.threads, else every core this process may run on."""
    if spec.threads > 0:
        return spec.threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _target(spec: LoadSpec) -> Any:
    import tvm

    if device_kind(spec.device) == "cuda":
        return tvm.target.Target.from_device(tvm.cuda(device_index(spec.device)))
    return tvm.target.Target(cpu_target_config(spec))


def _device(spec_device: str) -> Any:
    import tvm

    return tvm.cuda(device_index(spec_device)) if device_kind(spec_device) == "cuda" else tvm.cpu(0)


def summarize_error(error: BaseException) -> str:
    """The last informative line of a TVM error: they start with C++ stack frames and end with the message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("File ", "at ", "Traceback"))]
    return (useful or lines or [""])[-1]


def _set_thread_env(threads: int) -> None:
    """Sizes thread pools created from now on. Must run before the first inference of a thread (see module doc)."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TVM_BIND_THREADS", "0")


# ---------------------------------------------------------------------------------------------------------------
# front ends


def _onnx_tensor_info(value: Any) -> TensorInfo:
    from onnx import helper

    tensor = value.type.tensor_type
    dims = list(tensor.shape.dim)
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    names = tuple(d.dim_param if d.HasField("dim_param") else "" for d in dims)
    return TensorInfo(value.name, str(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))), shape, names)


def _drop_initialized_inputs(model: Any) -> None:
    """Removes the graph inputs that also have an initializer (ONNX IR < 4 lists every weight as an input too).
    TVM's Relax importer makes a parameter of each initializer and, for such an input, adds that same variable to
    the function's inputs as well: the function then defines it twice and the first pass over it fails with
    "Check failed: (!usage_map.count(var))". These inputs are never fed here (they are weights), so the model
    stays the same without them."""
    initializers = {t.name for t in model.graph.initializer}
    kept = [v for v in model.graph.input if v.name not in initializers]
    if len(kept) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(kept)


def _import_onnx(path: Path) -> tuple[Any, list[TensorInfo], list[TensorInfo]]:
    """Relax module (weights as parameters after the inputs), inputs and outputs of an ONNX file."""
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    model = onnx.load(str(path))  # resolves external data beside the file
    _drop_initialized_inputs(model)
    inputs = [_onnx_tensor_info(v) for v in model.graph.input]
    outputs = [_onnx_tensor_info(v) for v in model.graph.output]
    return from_onnx(model, keep_params_in_input=True), inputs, outputs


def _import_torch_export(path: Path) -> tuple[Any, list[TensorInfo], list[TensorInfo]]:
    """Relax module from a torch.export archive; names and specs as the torch backend reports them."""
    from tvm.relax.frontend.torch import from_exported_program

    from speedster_run.shared.torch_io import export_specs, load_export

    program, stored = load_export(path)
    inputs, outputs = export_specs(program, stored)
    return from_exported_program(program, keep_params_as_input=True), inputs, outputs


def _import(spec: LoadSpec) -> tuple[Any, list[Any], list[TensorInfo], list[TensorInfo]]:
    """(Relax module without weights, weights in call order, inputs, outputs)."""
    from tvm import relax

    importer = _import_onnx if spec.format == "onnx" else _import_torch_export
    mod, inputs, outputs = importer(Path(spec.model_path))
    mod, params = relax.frontend.detach_params(mod)
    return mod, list(params.get("main", [])), inputs, outputs


# ---------------------------------------------------------------------------------------------------------------
# compilation


def _compile_default(mod: Any, target: Any) -> Any:
    """TVM's default pipeline for the target (CPU: generic fused loops; GPU: dlight default schedules)."""
    import tvm
    from tvm import relax

    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))


def _fuse(mod: Any, target: Any) -> Any:
    """Legalised and fused module: what MetaSchedule extracts tasks from and compile_relax looks records up for."""
    import tvm
    from tvm.relax import pipeline

    with target:
        passes = pipeline.library_dispatch_passes(target) + pipeline.legalize_passes(target)
        return tvm.transform.Sequential(passes)(mod)


def _deadline_callback(deadline: float) -> Any:
    """A MeasureCallback that ends the other tasks once the time budget is spent (MetaSchedule counts only trials).
    The task just measured is left alone: the scheduler terminates it itself when its trials run out, and refuses
    to terminate a task twice. With one batch of trials per task per round, that is at most one more batch."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class _Deadline(PyMeasureCallback):
        def __init__(self) -> None:
            self.expired = False

        def apply(self, task_scheduler: Any, task_id: int, *_: Any) -> None:
            if time.monotonic() < deadline:
                return
            self.expired = True
            for index, task in enumerate(task_scheduler.tasks_):
                if index != task_id and not task.is_terminated:
                    task_scheduler.terminate_task(index)

    return _Deadline()


def _cost_model() -> str:
    """XGBoost's model guides the search when xgboost is installed; otherwise candidates are ranked at random."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


def _number(spec: LoadSpec, name: str, default: float, kind: type) -> Any:
    raw = spec.options.get(name)
    try:
        value = kind(raw) if raw is not None else default
    except ValueError:
        raise CandidateError("compile", f"option {name}={raw!r} is not a number") from None
    if value <= 0:
        raise CandidateError("compile", f"option {name} must be positive, got {raw!r}")
    return value


def _cache_dir(spec: LoadSpec, target: Any, shapes: str, trials: int) -> Path:
    """<cache>/<model sha256[:16]>-<sha256(target, TVM version, static shapes, trials)[:12]>: records are valid for
    that target and those shapes only (MetaSchedule keys records by workload); asking for more trials tunes again."""
    import tvm

    root = Path(spec.options.get("tune_cache") or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()
    target_key = hashlib.sha256(f"{target}|{tvm.__version__}|{shapes}|{trials}".encode()).hexdigest()[:12]
    return root / f"{sha256_file(Path(spec.model_path))[:16]}-{target_key}"


def _tune(fused: Any, target: Any, spec: LoadSpec, threads: int, shapes: str) -> tuple[Any, dict[str, str]]:
    """Tuning records for the model: from the cache, or tuned now and then cached (written atomically)."""
    from tvm.s_tir import meta_schedule as ms

    trials = int(_number(spec, "tune_trials", DEFAULT_TRIALS, int))
    budget = float(_number(spec, "tune_budget_s", DEFAULT_BUDGET_S, float))
    work = _cache_dir(spec, target, shapes, trials)
    if (work / "complete.json").exists():
        details = {"tuning": "cached", "tuning_cache": str(work), "tune_trials": str(trials)}
        return ms.database.JSONDatabase(work_dir=str(work)), details
    scratch = work.with_name(f"{work.name}.tmp-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    deadline = _deadline_callback(time.monotonic() + budget)
    start = time.monotonic()
    cost_model = _cost_model()
    tasks = len(ms.relax_integration.extract_tasks(fused, target))
    # tune_trials counts per task. Batches of at most 16: the scheduler gives every task one batch before it
    # favours any, so that a budget that runs out early still leaves each task some tuning.
    try:
        database = ms.relax_integration.tune_relax(
            fused, {}, target, str(scratch), max_trials_global=trials * max(tasks, 1), max_trials_per_task=trials,
            num_trials_per_iter=min(16, trials), cost_model=cost_model, seed=0,
            # Fresh worker processes import TVM before building: the default 30 s is not enough on a loaded machine.
            builder=ms.builder.LocalBuilder(max_workers=max(1, threads), timeout_sec=120),
            runner=ms.runner.LocalRunner(timeout_sec=60),
            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), deadline],
        )
    except BaseException:  # no half-written records under a name a later load would trust
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    seconds = time.monotonic() - start
    records = len(database.get_all_tuning_records())
    summary = {"trials": trials, "tasks": tasks, "budget_s": budget, "seconds": round(seconds, 1), "records": records,
               "cost_model": cost_model, "stopped_by_budget": deadline.expired}
    (scratch / "complete.json").write_text(json.dumps(summary))
    if work.exists():  # another process finished first: keep its records
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        scratch.rename(work)
    details = {"tuning": "tuned", "tuning_cache": str(work), "tune_trials": str(trials), "tuning_tasks": str(tasks),
               "tuning_seconds": f"{seconds:.1f}", "tuning_records": str(records), "cost_model": cost_model,
               "stopped_by_budget": str(deadline.expired).lower()}
    return ms.database.JSONDatabase(work_dir=str(work)), details


def _symbolic_dims(mod: Any, inputs: list[TensorInfo]) -> list[tuple[TensorInfo, int, Any]]:
    """(input, axis, Relax size variable) for every symbolic dim of the inputs."""
    from tvm import tirx

    return [(info, axis, dim) for info, param in zip(inputs, mod["main"].params)
            for axis, dim in enumerate(param.ty.shape.values) if isinstance(dim, tirx.Var)]


def _requested_sizes(spec: LoadSpec) -> dict[str, int]:
    """Option dims="batch=1,seq=128" as a dict."""
    sizes = {}
    for pair in filter(None, (p.strip() for p in spec.options.get("dims", "").split(","))):
        name, _, value = pair.partition("=")
        if not value.strip().isdigit():
            raise CandidateError("compile", f"option dims: expected name=size pairs, got {pair!r}")
        sizes[name.strip()] = int(value)
    return sizes


def _specialize(mod: Any, inputs: list[TensorInfo], outputs: list[TensorInfo],
                spec: LoadSpec) -> tuple[Any, list[TensorInfo], list[TensorInfo]]:
    """Binds symbolic dims to concrete sizes: MetaSchedule tunes static shapes only (it fails on symbolic ones).
    A dim's size comes from option dims (by the dim's name as reported in TensorInfo, or TVM's variable name),
    else from the first calibration sample."""
    from tvm import relax

    dims = _symbolic_dims(mod, inputs)
    if not dims:
        return mod, inputs, outputs
    requested = _requested_sizes(spec)
    sample = spec.calibration[0] if spec.calibration else {}
    sizes: dict[str, int] = {}  # TVM variable name -> size
    named: dict[str, int] = {}  # TensorInfo dim name -> size, to fix the outputs' dims too
    for info, axis, var in dims:
        label = info.dim_names[axis] if axis < len(info.dim_names) else ""
        size = requested.get(label) or requested.get(var.name)
        if size is None and info.name in sample:
            size = int(np.shape(sample[info.name])[axis])
        if size is not None:
            sizes.setdefault(var.name, size)
            if label:
                named.setdefault(label, sizes[var.name])
    missing = sorted({(info.dim_names[axis] if axis < len(info.dim_names) else "") or var.name
                      for info, axis, var in dims if var.name not in sizes})
    if missing:
        raise CandidateError("compile", f"tvm tuning needs static shapes: give sizes for {', '.join(missing)} "
                                        f"(option dims=\"{missing[0]}=1\", or calibration samples)")
    mod = relax.transform.BindSymbolicVars(sizes)(mod)

    def bound(info: TensorInfo) -> TensorInfo:
        labels = info.dim_names or ("",) * len(info.shape)
        shape = tuple(named.get(label, d) if d is None else d for d, label in zip(info.shape, labels))
        return TensorInfo(info.name, info.dtype, shape, info.dim_names)

    static_inputs = [TensorInfo(i.name, i.dtype, tuple(int(v) for v in p.ty.shape.values), i.dim_names)
                     for i, p in zip(inputs, mod["main"].params)]
    return mod, static_inputs, [bound(o) for o in outputs]


def _compile_tuned(mod: Any, target: Any, spec: LoadSpec, threads: int,
                   shapes: str) -> tuple[Any, dict[str, str]]:
    import tvm
    from tvm.s_tir import meta_schedule as ms

    fused = _fuse(mod, target)
    database, details = _tune(fused, target, spec, threads, shapes)
    with tvm.transform.PassContext(opt_level=3):
        return ms.relax_integration.compile_relax(database, fused, target, None), details


# ---------------------------------------------------------------------------------------------------------------
# the backend


class TvmModel(LoadedModel):
    """A Relax VirtualMachine over a compiled executable, with the weights passed after the inputs on every call."""

    error_summary = staticmethod(summarize_error)

    def __init__(self, vm: Any, params: list[Any], executable: Any, spec: LoadSpec, inputs: list[TensorInfo],
                 outputs: list[TensorInfo], details: dict[str, str]):
        self._vm = vm
        self._main = vm["main"]
        self._params = params
        self._executable = executable  # relax.Executable (fresh compile) or a loaded runtime.Module (artifact)
        self._spec = spec
        self._device = _device(spec.device)
        self._threads = int(details.get("threads", "0"))
        self._configured = threading.local()
        self.inputs, self.outputs, self.details = inputs, outputs, details

    def _configure_thread_pool(self) -> None:
        """Caps this thread's pool at the wanted size once (a pool created before load may be larger)."""
        if getattr(self._configured, "done", False) or device_kind(self._spec.device) != "cpu":
            return
        import tvm

        if tvm.get_global_func("runtime.NumThreads")() != self._threads:
            tvm.get_global_func("runtime.config_threadpool")(1, self._threads)
        self._configured.done = True

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import tvm

        names = [info.name for info in self.inputs]
        if set(feeds) != set(names):
            raise CandidateError("runtime", f"inputs {sorted(feeds)} do not match the model's {sorted(names)}")
        self._configure_thread_pool()
        args = [tvm.runtime.tensor(np.ascontiguousarray(feeds[name]), self._device) for name in names]
        result = self._main(*args, *self._params)
        # .numpy() copies to the host and waits for the device, so the results are ready on return.
        arrays = [leaf.numpy() for leaf in _flatten(result)]
        if len(arrays) != len(self.outputs):
            raise CandidateError("runtime", f"tvm returned {len(arrays)} outputs, the model has {len(self.outputs)}")
        return {info.name: array for info, array in zip(self.outputs, arrays)}

    def save(self, directory: Path) -> Artifact:
        """model.so (the compiled library, through export_library), params.npz (weights in call order), io.json."""
        directory = Path(directory)
        if self._spec.format == ARTIFACT_FORMAT:  # a shared library already: copied, not re-exported once loaded
            shutil.copy2(Path(self._spec.model_path), directory / "model.so")
        else:
            self._executable.export_library(str(directory / "model.so"))
        np.savez(directory / "params.npz", *[p.numpy() for p in self._params])
        io = {"inputs": [_info_json(i) for i in self.inputs], "outputs": [_info_json(o) for o in self.outputs],
              "details": self.details}
        (directory / "io.json").write_text(json.dumps(io))
        options = {"artifact": "true", "target": self.details.get("target", "")}
        return Artifact(ARTIFACT_FORMAT, "model.so", self._spec.precision, self._spec.variant, options,
                        _ARTIFACT_FILES)

    def close(self) -> None:
        self._main = self._vm = self._params = self._executable = None


def _flatten(result: Any) -> list[Any]:
    """Tensors of a VM result: one tensor, or a (nested) tuple of them."""
    if hasattr(result, "numpy"):
        return [result]
    return [leaf for item in result for leaf in _flatten(item)]


def _info_json(info: TensorInfo) -> dict[str, Any]:
    return {"name": info.name, "dtype": info.dtype, "shape": list(info.shape), "dim_names": list(info.dim_names)}


def _info_from_json(data: dict[str, Any]) -> TensorInfo:
    return TensorInfo(data["name"], data["dtype"], tuple(data["shape"]), tuple(data.get("dim_names") or ()))


def _cuda_count() -> int:
    import tvm

    count = 0
    while count < 16 and tvm.cuda(count).exist:
        count += 1
    return count


class TvmBackend(Backend):
    """Apache TVM through Relax, on CPU (LLVM) or CUDA."""

    name = "tvm"
    artifact_formats = (ARTIFACT_FORMAT,)
    error_summary = staticmethod(summarize_error)

    def probe(self) -> Availability:
        try:
            import tvm
            import tvm_ffi
        except ImportError as error:
            return Availability(False, f"apache-tvm is not installed ({error}): {INSTALL_HINT}")
        except Exception as error:  # noqa: BLE001 - a native library that fails to load
            return Availability(False, f"apache-tvm failed to load: {one_line(error, summarize_error)}")
        from tvm.target import codegen

        try:
            gpus = [f"cuda:{i}" for i in range(_cuda_count())]
        except Exception:  # noqa: BLE001 - a wheel without CUDA support answers with an error
            gpus = []
        kinds = ("cpu", "cuda") if gpus else ("cpu",)
        formats = FORMATS if _has_torch() else ("onnx",)
        offers = [Offer("fp32", "default", kinds, formats, "Relax default pipeline (CPU: untuned loops; CUDA: dlight)")]
        ffi_version = getattr(tvm_ffi, "__version__", "")
        if not ffi_version.startswith(_FFI_BROKEN_FOR_TUNING):
            offers.append(Offer("fp32", "tuned", kinds, formats,
                                f"MetaSchedule tuning, static shapes (tune_trials per task, default {DEFAULT_TRIALS}; "
                                f"tune_budget_s, default {DEFAULT_BUDGET_S:.0f}; records cached)"))
        versions = {"apache-tvm": tvm.__version__, "apache-tvm-ffi": ffi_version,
                    "llvm": str(codegen.llvm_version_major(allow_none=True) or "")}
        return Availability(True, versions=versions, devices=("cpu", *gpus), offers=tuple(offers))

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        threads = _threads(spec)
        _set_thread_env(threads)
        if spec.format == ARTIFACT_FORMAT:
            return _load_artifact(spec, threads)
        return _load_model(spec, threads)


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _load_model(spec: LoadSpec, threads: int) -> TvmModel:
    import tvm
    from tvm import relax

    start = time.monotonic()
    mod, params, inputs, outputs = _import(spec)
    target = _target(spec)
    if spec.variant == "tuned":
        mod, inputs, outputs = _specialize(mod, inputs, outputs, spec)
        shapes = ";".join(f"{i.name}={'x'.join(map(str, i.shape))}" for i in inputs)
        executable, details = _compile_tuned(mod, target, spec, threads, shapes)
        details["static_shapes"] = shapes
    else:
        executable, details = _compile_default(mod, target), {"tuning": "none"}
    device = _device(spec.device)
    vm = relax.VirtualMachine(executable, device)
    on_device = [tvm.runtime.tensor(p.numpy(), device) for p in params]
    details.update(_common_details(target, threads, "model", time.monotonic() - start))
    return TvmModel(vm, on_device, executable, spec, inputs, outputs, details)


def _load_artifact(spec: LoadSpec, threads: int) -> TvmModel:
    """A saved model.so + params.npz + io.json: nothing is imported, tuned or compiled again."""
    import tvm
    from tvm import relax

    start = time.monotonic()
    directory = Path(spec.model_path).parent
    io = json.loads((directory / "io.json").read_text())
    library = tvm.runtime.load_module(str(spec.model_path))
    device = _device(spec.device)
    vm = relax.VirtualMachine(library, device)
    with np.load(directory / "params.npz") as saved:
        params = [tvm.runtime.tensor(saved[f"arr_{i}"], device) for i in range(len(saved.files))]
    saved_details = io.get("details", {})
    details = {key: saved_details[key] for key in ("tuning", "tune_trials", "target") if key in saved_details}
    details.update({"source": "artifact", "threads": str(threads), "load_seconds": f"{time.monotonic() - start:.2f}"})
    inputs = [_info_from_json(d) for d in io["inputs"]]
    outputs = [_info_from_json(d) for d in io["outputs"]]
    return TvmModel(vm, params, library, spec, inputs, outputs, details)


def _common_details(target: Any, threads: int, source: str, seconds: float) -> dict[str, str]:
    return {"target": str(target), "threads": str(threads), "source": source, "compile_seconds": f"{seconds:.2f}",
            "precision": "fp32"}
