"""PyTorch backend: eager, frozen TorchScript, Inductor and dynamic-int8 runs of TorchScript and torch.export files."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import operator
import re
import shutil
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from runners.backends.base import (
    Artifact, Availability, Backend, CandidateError, LoadedModel, LoadSpec, Offer, TensorInfo, device_kind,
)
from runners.tensors import NAME_TO_CODE, numpy_dtype

FORMATS = ("torchscript", "torch_export")
# Input/output specs stored in our archives (and the zoo's): TorchScript files carry no shapes or dtypes, and
# torch.export keeps symbol names (s77) instead of the Dim names the exporter chose.
INPUTS_FILE = "speedster_run/inputs.json"
OUTPUTS_FILE = "speedster_run/outputs.json"
SAVED_NAME = "model.torchscript"
_HALF = {"fp16": "float16", "bf16": "bfloat16"}
_interop_threads_set = False


class TorchBackend(Backend):
    name = "torch"

    def probe(self) -> Availability:
        try:
            import torch
        except Exception as exc:  # an ImportError, or a broken CUDA install failing at import
            return Availability(False, reason=f"torch is not importable: {exc}")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        both = ("cpu", "cuda")
        offers = [
            Offer("fp32", "eager", both, FORMATS, "the artifact as is, under inference_mode (baseline)"),
            Offer("fp32", "torchscript", both, FORMATS, "TorchScript frozen + optimize_for_inference"),
            Offer("fp32", "inductor", both, ("torch_export",), "torch.compile(backend='inductor')"),
            Offer("int8", "dynamic", ("cpu",), FORMATS, "dynamic int8 Linear layers, per-channel weights"),
        ]
        offers += [Offer(p, "eager", ("cuda",), FORMATS, f"model and inputs cast to {_HALF[p]}") for p in _HALF if gpus]
        devices = ("cpu",) + tuple(f"cuda:{i}" for i in range(gpus))
        return Availability(True, versions={"torch": torch.__version__}, devices=devices, offers=tuple(offers))

    def load(self, spec: LoadSpec) -> LoadedModel:
        if not any((o.precision, o.variant) == (spec.precision, spec.variant) and spec.format in o.formats
                   and device_kind(spec.device) in o.devices for o in self.probe().offers):
            raise CandidateError("unavailable", f"torch offers no {spec.precision}/{spec.variant} for {spec.format} "
                                                f"on {spec.device}")
        try:
            import torch

            _set_threads(torch, spec.threads)
            with quiet_jit():
                return _build(torch, spec)
        except CandidateError:
            raise
        except Exception as exc:
            raise failure(exc, "compile") from exc


def failure(exc: BaseException, category: str, prefix: str = "") -> CandidateError:
    """A CandidateError for an exception; running out of memory is "oom" whatever the stage."""
    text = str(exc).strip()
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or re.search(
            r"out of memory|can't allocate memory", text, re.IGNORECASE):
        category = "oom"
    message = f"{prefix}{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"
    return CandidateError(category, message, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Hides torch.jit's deprecation warnings: TorchScript still works, and is still what this backend offers."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit", DeprecationWarning)
        yield


def _set_threads(torch: Any, threads: int) -> None:
    global _interop_threads_set
    if threads > 0:
        torch.set_num_threads(threads)
    if not _interop_threads_set:  # one inter-op thread keeps timings steady; torch refuses a second setting
        _interop_threads_set = True
        with contextlib.suppress(RuntimeError):  # ...and any setting once parallel work has started
            torch.set_num_interop_threads(1)


# --- specs ---------------------------------------------------------------------------------------------------------

def specs_to_json(infos: list[TensorInfo]) -> str:
    return json.dumps([{"name": i.name, "dtype": i.dtype, "shape": list(i.shape), "dim_names": list(i.dim_names)}
                       for i in infos])


def specs_from_json(text: str | bytes) -> list[TensorInfo] | None:
    return [TensorInfo(d["name"], d["dtype"], tuple(d["shape"]), tuple(d.get("dim_names") or ()))
            for d in json.loads(text)] if text else None


def _tensor_info(name: str, value: Any, rename: dict[str, str] | None = None) -> TensorInfo:
    """TensorInfo of a (fake) tensor or array; a symbolic dim becomes None, named after its symbol."""
    if not hasattr(value, "dtype"):
        raise ValueError(f"{name} is not a tensor ({type(value).__name__}); only tensors are supported")
    shape = tuple(d if isinstance(d, int) else None for d in value.shape)
    names = tuple("" if isinstance(d, int) else (rename or {}).get(str(d), str(d)) for d in value.shape)
    return TensorInfo(name, str(value.dtype).removeprefix("torch."), shape, names)


def load_export(path: Path, device: str = "cpu") -> tuple[Any, list[TensorInfo] | None]:
    """The ExportedProgram, moved to `device`, and the input specs stored in it (if any)."""
    import torch

    extra = {INPUTS_FILE: ""}
    with open(path, "rb") as file:  # a file object: torch.export.load warns about names not ending in .pt2
        ep = torch.export.load(file, extra_files=extra)
    if device_kind(device) != "cpu":
        ep = torch.export.passes.move_to_device_pass(ep, device)
    return ep, specs_from_json(extra[INPUTS_FILE])


def export_specs(ep: Any, stored: list[TensorInfo] | None = None) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of an ExportedProgram from its graph's meta; stored specs rename inputs and dims."""
    from torch.export.graph_signature import InputKind
    from torch.utils._pytree import tree_unflatten

    values = {n.name: n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder"}
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    names, rename = user, {}
    if stored and len(stored) == len(user):
        names = [s.name for s in stored]
        for name, saved in zip(user, stored):
            symbols = _tensor_info(name, values[name]).dim_names
            rename.update({symbol: s for symbol, s in zip(symbols, saved.dim_names) if symbol and s})
    inputs = [_tensor_info(n, values[u], rename) for n, u in zip(names, user)]
    leaves = [a.meta.get("val") for a in next(n for n in ep.graph.nodes if n.op == "output").args[0]]
    tree = tree_unflatten(leaves, ep.call_spec.out_spec) if ep.call_spec.out_spec else leaves
    return inputs, [_tensor_info(name, value, rename) for name, value in flatten_outputs(tree)]


def load_torchscript(path: Path, device: str = "cpu") -> tuple[Any, list[TensorInfo] | None, list[TensorInfo] | None]:
    """The ScriptModule and the input / output specs stored in its archive (if any)."""
    import torch

    extra = {INPUTS_FILE: "", OUTPUTS_FILE: ""}
    module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    return module, specs_from_json(extra[INPUTS_FILE]), specs_from_json(extra[OUTPUTS_FILE])


def torchscript_input_names(module: Any) -> list[str]:
    return [arg.name for arg in module.forward.schema.arguments[1:]]  # arguments[0] is self


def flatten_outputs(result: Any) -> list[tuple[str, Any]]:
    """(name, leaf) pairs: a dict's keys name its values, anything else is output_0, output_1..."""
    from torch.utils._pytree import tree_leaves

    if not (isinstance(result, dict) and all(isinstance(k, str) for k in result)):
        return [(f"output_{i}", leaf) for i, leaf in enumerate(tree_leaves(result))]
    groups = [(key, tree_leaves(value)) for key, value in result.items()]
    return [(key if len(leaves) == 1 else f"{key}_{j}", leaf)
            for key, leaves in groups for j, leaf in enumerate(leaves)]


def outputs_from_run(named: list[tuple[str, Any]], inputs: list[TensorInfo],
                     example: list[np.ndarray]) -> list[TensorInfo]:
    """Output specs from one run; a leading dim as long as a symbolic leading input dim is taken to be that dim."""
    batch = next(((i.dim_names[0], x.shape[0]) for i, x in zip(inputs, example) if i.shape and i.shape[0] is None),
                 None)
    infos = [_tensor_info(name, value) for name, value in named]
    return [dataclasses.replace(i, shape=(None, *i.shape[1:]), dim_names=(batch[0], *i.dim_names[1:]))
            if batch and i.shape and i.shape[0] == batch[1] else i for i in infos]


def example_arrays(inputs: list[TensorInfo], calibration: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first calibration sample in input order, or zeros (symbolic dims as 1) when there is none."""
    sample = calibration[0] if calibration else {}
    if len(sample) == len(inputs) and not all(i.name in sample for i in inputs):
        return list(sample.values())  # named otherwise than in the artifact: taken by position
    return [sample[i.name] if i.name in sample else
            np.zeros([d or 1 for d in i.shape], numpy_dtype(NAME_TO_CODE[i.dtype])) for i in inputs]


def to_torch(array: np.ndarray, device: Any, cast: Any = None) -> Any:
    import torch

    array = np.ascontiguousarray(array)
    array = array if array.flags.writeable else array.copy()  # torch.from_numpy warns on read-only memory
    if array.dtype.name == "bfloat16":  # numpy has no bfloat16 of its own (ml_dtypes): go through its bits
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).to(device)
    else:
        tensor = torch.from_numpy(array).to(device)
    return tensor.to(cast) if cast is not None and tensor.is_floating_point() else tensor


def to_numpy(value: Any, restore: Any = None) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach().to(restore) if restore is not None and value.is_floating_point() else value.detach()
    if value.dtype == torch.bfloat16:
        return value.view(torch.int16).cpu().numpy().view(numpy_dtype(NAME_TO_CODE["bfloat16"]))
    return value.cpu().numpy()


# --- candidates ----------------------------------------------------------------------------------------------------

def plain_module(ep: Any) -> Any:
    """ep.module() without its input-constraint hook, which torch.jit.trace cannot run (it reads SymInts)."""
    from torch.export._unlift import _check_input_constraints_pre_hook

    module = ep.module(check_guards=False)
    for key, hook in list(module._forward_pre_hooks.items()):
        if hook is _check_input_constraints_pre_hook:
            del module._forward_pre_hooks[key]
            module._forward_pre_hooks_with_kwargs.pop(key, None)
    return module


def quantize_linears(module: Any) -> int:
    """Swaps aten.linear nodes with constant weights for dynamic int8 Linear modules (per-channel qint8 weights).

    quantize_dynamic only swaps nn.Linear modules, and an exported program's module calls aten.linear instead;
    torch.ao's pt2e flow is absent from current builds, hence this small FX pass.
    """
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    graph, count = module.graph, 0
    for node in [n for n in graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.linear.default]:
        weight_node, bias_node = node.args[1], (node.args[2] if len(node.args) > 2 else node.kwargs.get("bias"))
        if any(n is not None and getattr(n, "op", None) != "get_attr" for n in (weight_node, bias_node)):
            continue  # a computed weight cannot be quantised ahead of time
        weight = operator.attrgetter(weight_node.target)(module).detach().float()
        bias = None if bias_node is None else operator.attrgetter(bias_node.target)(module).detach().float()
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated, yet still the only dynamic-int8 kernels
            warnings.simplefilter("ignore")
            layer = DynamicLinear(weight.shape[1], weight.shape[0], bias_=bias is not None, dtype=torch.qint8)
            zero = torch.zeros(weight.shape[0], dtype=torch.long)
            layer.set_weight_bias(torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8), bias)
        module.add_submodule(f"dynamic_linear_{count}", layer)
        with graph.inserting_before(node):
            node.replace_all_uses_with(graph.call_module(f"dynamic_linear_{count}", (node.args[0],)))
        graph.erase_node(node)
        count += 1
    if count:
        graph.eliminate_dead_code()
        module.delete_all_unused_submodules()
        module.recompile()
    return count


def trace_module(module: Any, example: list[Any] | tuple[Any, ...]) -> Any:
    import torch

    with warnings.catch_warnings():  # deprecation, and tracer warnings about the guards of exported modules
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, tuple(example), check_trace=False)


def _inductor(torch: Any, module: Any, example: list[Any], device: str) -> tuple[Any, float]:
    compiled, start = torch.compile(module, backend="inductor"), time.perf_counter()
    try:  # compilation is lazy: one call here makes compile_s honest and surfaces compile errors in load
        with torch.inference_mode():
            compiled(*example)
    except Exception as exc:
        hint = ""
        if device_kind(device) == "cpu":
            cxx = torch._inductor.config.cpp.cxx[-1] or "g++"
            hint = f"Inductor on CPU needs a C++ compiler ({cxx}: {shutil.which(cxx) or 'not found'}); "
        raise failure(exc, "compile", f"inductor compile failed: {hint}") from exc
    return compiled, time.perf_counter() - start


def _build(torch: Any, spec: LoadSpec) -> _TorchModel:
    details = {"variant": spec.variant, "precision": spec.precision, "device": spec.device,
               "threads": str(torch.get_num_threads()), "torch": torch.__version__}
    ep = None
    if spec.format == "torch_export":
        ep, stored = load_export(spec.model_path, spec.device)
        inputs, outputs = export_specs(ep, stored)
        module = ep.module()
    else:
        module, stored, outputs = load_torchscript(spec.model_path, spec.device)
        inputs, module = _torchscript_inputs(module, stored, spec), module.eval()  # an exported module refuses eval()
    example = [to_torch(a, spec.device) for a in example_arrays(inputs, spec.calibration)]
    model = _TorchModel(module, spec, inputs, outputs or [], details)
    if spec.variant == "torchscript":
        script = module if ep is None else trace_module(plain_module(ep), example)
        frozen = torch.jit.freeze(script.eval()) if hasattr(script, "training") else script  # frozen: no `training`
        # optimize_for_inference rewrites its argument in place, with MKLDNN constants that torch.jit.load cannot
        # read back: it gets a copy, and `frozen` stays the module to save.
        buffer = io.BytesIO()
        torch.jit.save(frozen, buffer)
        buffer.seek(0)
        model.fn, model.script = torch.jit.optimize_for_inference(torch.jit.load(buffer, spec.device)), lambda: frozen
    elif spec.variant == "inductor":
        model.fn, warmup_s = _inductor(torch, module, example, spec.device)
        details["inductor_warmup_s"] = f"{warmup_s:.3f}"
    elif spec.variant == "dynamic":
        _quantize(model, ep, example, spec.options.get("artifact") == "true")
    elif spec.precision in _HALF:
        model.cast = getattr(torch, _HALF[spec.precision])
        model.fn = module.to(model.cast)
        floats = [i.dtype for i in inputs if i.dtype.startswith(("float", "bfloat"))]
        model.restore = getattr(torch, floats[0] if floats else "float32")
    if not model.outputs:  # TorchScript carries no output specs: learn them from one run
        arrays = example_arrays(inputs, spec.calibration)
        results = model.run({i.name: a for i, a in zip(inputs, arrays)})
        model.outputs = outputs_from_run(list(results.items()), inputs, arrays)
    return model


def _torchscript_inputs(module: Any, stored: list[TensorInfo] | None, spec: LoadSpec) -> list[TensorInfo]:
    names = torchscript_input_names(module)
    if stored and len(stored) == len(names):
        return [dataclasses.replace(s, name=n) for s, n in zip(stored, names)]
    if not spec.calibration:
        raise CandidateError("compile", f"{spec.model_path.name} stores no input specs ({INPUTS_FILE}) and no "
                                        f"calibration inputs were given for {', '.join(names)}")
    arrays = example_arrays([TensorInfo(n, "float32", ()) for n in names], spec.calibration)
    return [_tensor_info(n, a) for n, a in zip(names, arrays)]


def _quantize(model: _TorchModel, ep: Any, example: list[Any], artifact: bool) -> None:
    if ep is not None and not artifact:
        model.fn = plain_module(ep)
        count = quantize_linears(model.fn)
        # Saved as a TorchScript trace of the quantized module, so that reloading skips quantization.
        model.script = lambda: trace_module(model.fn, example)
        model.details["quantization"] = "FX pass: aten.linear -> dynamic quantized Linear, per-channel qint8 weights"
    else:
        if not artifact:  # our own saved artifacts are quantized already
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic_jit

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fn = quantize_dynamic_jit(model.fn, {"": per_channel_dynamic_qconfig})
            model.details["quantization"] = "quantize_dynamic_jit, per-channel qint8 weights"
        count = str(model.fn.inlined_graph).count("quantized::linear_dynamic")
        model.script = lambda: model.fn
    if not count:
        raise CandidateError("compile", "no Linear layer to quantize")
    model.details["quantized_linear_layers"] = str(count)


class _TorchModel(LoadedModel):
    def __init__(self, fn: Any, spec: LoadSpec, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 details: dict[str, str]):
        self.fn, self.spec, self.inputs, self.outputs, self.details = fn, spec, inputs, outputs, details
        self.cast: Any = None  # fp16/bf16: inputs are cast to this, float outputs back to `restore`
        self.restore: Any = None
        self.script: Callable[[], Any] | None = None  # TorchScript to save in place of the source artifact

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise CandidateError("runtime", f"missing inputs: {', '.join(missing)}")
        try:
            with torch.inference_mode():
                named = flatten_outputs(self.fn(*[to_torch(feeds[i.name], self.spec.device, self.cast)
                                                  for i in self.inputs]))
                outputs = {name: to_numpy(value, self.restore) for name, value in named}  # .cpu() waits for the GPU
            if device_kind(self.spec.device) == "cuda":
                torch.cuda.synchronize(self.spec.device)
            return outputs
        except Exception as exc:
            raise failure(exc, "runtime") from exc

    def save(self, directory: Path) -> Artifact:
        import torch

        spec, directory = self.spec, Path(directory)
        if self.script is not None:
            try:
                extra = {INPUTS_FILE: specs_to_json(self.inputs), OUTPUTS_FILE: specs_to_json(self.outputs)}
                with quiet_jit():
                    torch.jit.save(self.script(), str(directory / SAVED_NAME), _extra_files=extra)
                return Artifact("torchscript", SAVED_NAME, spec.precision, spec.variant, {"artifact": "true"},
                                (SAVED_NAME,))
            except Exception as exc:
                if spec.variant != "dynamic" or spec.format != "torch_export":
                    raise failure(exc, "compile", "saving TorchScript failed: ") from exc
                (directory / SAVED_NAME).unlink(missing_ok=True)  # fall back: the loader re-quantizes the source
        # Eager and Inductor keep the source artifact: the manifest's variant makes the loader compile it again.
        shutil.copyfile(spec.model_path, directory / spec.model_path.name)
        options = {k: v for k, v in spec.options.items() if k != "artifact"}
        return Artifact(spec.format, spec.model_path.name, spec.precision, spec.variant, options,
                        (spec.model_path.name,))
