"""PyTorch backend: eager, frozen TorchScript, Inductor and dynamic-int8 runs of TorchScript and torch.export files."""

from __future__ import annotations

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
from typing import Any, Callable

import numpy as np

from runners.tensors import NAME_TO_CODE, numpy_dtype
from runners.backends.base import (
    Artifact, Availability, Backend, CandidateError, LoadedModel, LoadSpec, Offer, TensorInfo, device_kind,
)

FORMATS = ("torchscript", "torch_export")
# Input/output specs stored inside our archives (and the zoo's), since TorchScript files carry no shapes or dtypes.
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
        if gpus:
            offers += [Offer(p, "eager", ("cuda",), FORMATS, f"model and inputs cast to {_HALF[p]}") for p in _HALF]
        devices = ("cpu",) + tuple(f"cuda:{i}" for i in range(gpus))
        return Availability(True, versions={"torch": torch.__version__}, devices=devices, offers=tuple(offers))

    def load(self, spec: LoadSpec) -> LoadedModel:
        offer = next((o for o in self.probe().offers if (o.precision, o.variant) == (spec.precision, spec.variant)
                      and device_kind(spec.device) in o.devices and spec.format in o.formats), None)
        if offer is None:
            raise CandidateError("unavailable", f"torch offers no {spec.precision}/{spec.variant} for "
                                                f"{spec.format} on {spec.device}")
        try:
            import torch
            _set_threads(torch, spec.threads)
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
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return CandidateError(category, f"{prefix}{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}", detail)


def _set_threads(torch: Any, threads: int) -> None:
    global _interop_threads_set
    if threads > 0:
        torch.set_num_threads(threads)
    if not _interop_threads_set:
        _interop_threads_set = True
        try:  # one inter-op thread keeps timings steady; torch refuses once parallel work has started
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass


# --- reading specs -------------------------------------------------------------------------------------------------

def specs_to_json(infos: list[TensorInfo]) -> str:
    return json.dumps([{"name": i.name, "dtype": i.dtype, "shape": list(i.shape), "dim_names": list(i.dim_names)}
                       for i in infos])


def specs_from_json(text: str | bytes) -> list[TensorInfo] | None:
    if not text:
        return None
    return [TensorInfo(d["name"], d["dtype"], tuple(d["shape"]), tuple(d.get("dim_names") or ())) for d in json.loads(text)]


def _tensor_info(name: str, value: Any, rename: dict[str, str] | None = None) -> TensorInfo:
    """TensorInfo of a (fake) tensor; symbolic dims become None, named after their symbol."""
    if not hasattr(value, "dtype"):
        raise ValueError(f"{name} is not a tensor ({type(value).__name__}); only tensor inputs are supported")
    shape = tuple(int(d) if isinstance(d, int) else None for d in value.shape)
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
    """Inputs and outputs of an ExportedProgram, from its placeholder/output meta; stored specs name inputs and dims."""
    import torch
    from torch.export.graph_signature import InputKind

    nodes = {n.name: n for n in ep.graph.nodes}
    user = [s.arg.name for s in ep.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    inputs = [_tensor_info(name, nodes[name].meta.get("val")) for name in user]
    rename: dict[str, str] = {}
    if stored and len(stored) == len(inputs):  # the symbol names (s77) give way to the exporter's Dim names
        for info, saved in zip(inputs, stored):
            rename.update({d: s for d, s in zip(info.dim_names, saved.dim_names) if d and s})
        inputs = [_tensor_info(s.name, nodes[name].meta["val"], rename) for name, s in zip(user, stored)]
    values = [a.meta.get("val") for a in next(n for n in ep.graph.nodes if n.op == "output").args[0]]
    tree = torch.utils._pytree.tree_unflatten(values, ep.call_spec.out_spec) if ep.call_spec.out_spec else values
    return inputs, [_tensor_info(name, value, rename) for name, value in flatten_outputs(tree)]


def load_torchscript(path: Path, device: str = "cpu") -> tuple[Any, list[TensorInfo] | None, list[TensorInfo] | None]:
    """The ScriptModule, and the input / output specs stored in its archive (if any)."""
    import torch

    extra = {INPUTS_FILE: "", OUTPUTS_FILE: ""}
    module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    return module, specs_from_json(extra[INPUTS_FILE]), specs_from_json(extra[OUTPUTS_FILE])


def torchscript_input_names(module: Any) -> list[str]:
    return [arg.name for arg in module.forward.schema.arguments[1:]]  # arguments[0] is self


def flatten_outputs(result: Any) -> list[tuple[str, Any]]:
    """(name, leaf) pairs: a dict's keys name its values, anything else is output_0, output_1..."""
    from torch.utils._pytree import tree_leaves

    if isinstance(result, dict) and all(isinstance(k, str) for k in result):
        pairs = []
        for key, value in result.items():
            leaves = tree_leaves(value)
            pairs += [(key if len(leaves) == 1 else f"{key}_{j}", leaf) for j, leaf in enumerate(leaves)]
        return pairs
    return [(f"output_{i}", leaf) for i, leaf in enumerate(tree_leaves(result))]


def outputs_from_run(named: list[tuple[str, Any]], inputs: list[TensorInfo], example: list[np.ndarray]) -> list[TensorInfo]:
    """Output specs from one run; a leading dim equal to a symbolic leading input dim is taken as that same dim."""
    batch = next(((i.dim_names[0], x.shape[0]) for i, x in zip(inputs, example) if i.shape and i.shape[0] is None), None)
    infos = []
    for name, value in named:
        info = _tensor_info(name, value)
        if batch and info.shape and info.shape[0] == batch[1]:
            info = dataclasses.replace(info, shape=(None, *info.shape[1:]), dim_names=(batch[0], *info.dim_names[1:]))
        infos.append(info)
    return infos


def example_arrays(inputs: list[TensorInfo], calibration: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """The first calibration sample in input order, or zeros (symbolic dims as 1) when there is none."""
    sample = calibration[0] if calibration else {}
    if len(sample) == len(inputs) and not all(i.name in sample for i in inputs):
        return list(sample.values())  # names differ from the artifact's: take them by position
    return [sample[i.name] if i.name in sample else np.zeros([d or 1 for d in i.shape], numpy_dtype(NAME_TO_CODE[i.dtype]))
            for i in inputs]


def to_torch(array: np.ndarray, device: Any, cast: Any = None) -> Any:
    import torch

    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch.from_numpy warns on read-only memory
        array = array.copy()
    if array.dtype.name == "bfloat16":  # numpy has no bfloat16: go through its bits
        tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    else:
        tensor = torch.from_numpy(array)
    tensor = tensor.to(device)
    return tensor.to(cast) if cast is not None and tensor.is_floating_point() else tensor


def to_numpy(value: Any, restore: Any = None) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor):
        return np.asarray(value)
    value = value.detach()
    if restore is not None and value.is_floating_point():
        value = value.to(restore)
    if value.dtype == torch.bfloat16:
        import ml_dtypes
        return value.view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16)
    return value.cpu().numpy()


# --- building candidates -------------------------------------------------------------------------------------------

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
    torch.ao's pt2e flow is absent from current builds, so this is a small FX pass of our own.
    """
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    graph, count = module.graph, 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default:
            continue
        weight_node, bias_node = node.args[1], (node.args[2] if len(node.args) > 2 else node.kwargs.get("bias"))
        if any(n is not None and getattr(n, "op", None) != "get_attr" for n in (weight_node, bias_node)):
            continue  # a computed weight cannot be quantised ahead of time
        weight = operator.attrgetter(weight_node.target)(module).detach().float()
        bias = None if bias_node is None else operator.attrgetter(bias_node.target)(module).detach().float()
        scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated, yet still the only dynamic-int8 kernels
            warnings.simplefilter("ignore")
            layer = DynamicLinear(weight.shape[1], weight.shape[0], bias_=bias is not None, dtype=torch.qint8)
            layer.set_weight_bias(torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8), bias)
        name = f"dynamic_linear_{count}"
        module.add_submodule(name, layer)
        with graph.inserting_before(node):
            node.replace_all_uses_with(graph.call_module(name, (node.args[0],)))
        graph.erase_node(node)
        count += 1
    if count:
        graph.eliminate_dead_code()
        module.delete_all_unused_submodules()
        module.recompile()
    return count


def _trace(module: Any, example: list[Any]) -> Any:
    import torch

    with warnings.catch_warnings():  # torch.jit.trace is deprecated in favour of torch.export; it still works
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, tuple(example), check_trace=False)


def _inductor(torch: Any, module: Any, example: list[Any], device: str) -> tuple[Any, float]:
    compiled = torch.compile(module, backend="inductor")
    start = time.perf_counter()
    try:  # compilation is lazy: one call here makes compile_s honest and surfaces compile errors in load
        with torch.inference_mode():
            compiled(*example)
    except Exception as exc:
        hint = ""
        if device_kind(device) == "cpu":
            compiler = torch._inductor.config.cpp.cxx[-1] or "g++"
            hint = f"Inductor on CPU needs a C++ compiler ({compiler}: {shutil.which(compiler) or 'not found'}); "
        raise failure(exc, "compile", f"inductor compile failed: {hint}") from exc
    return compiled, time.perf_counter() - start


def _build(torch: Any, spec: LoadSpec) -> _TorchModel:
    artifact = spec.options.get("artifact") == "true"
    details = {"variant": spec.variant, "precision": spec.precision, "device": spec.device,
               "threads": str(torch.get_num_threads()), "torch": torch.__version__}
    if spec.format == "torch_export":
        ep, stored = load_export(spec.model_path, spec.device)
        inputs, outputs = export_specs(ep, stored)
        module = ep.module()
    else:
        module, stored, outputs = load_torchscript(spec.model_path, spec.device)
        inputs = _torchscript_inputs(module, stored, spec)
        module.eval()
    example = [to_torch(a, spec.device) for a in example_arrays(inputs, spec.calibration)]
    model = _TorchModel(module, spec, inputs, outputs or [], details)
    if spec.variant == "torchscript":
        script = module if spec.format == "torchscript" else _trace(plain_module(ep), example)
        frozen = torch.jit.freeze(script.eval()) if hasattr(script, "training") else script  # frozen: no training
        # optimize_for_inference rewrites its argument in place, with MKLDNN constants that torch.jit.load cannot
        # read back: it gets a copy, and `frozen` stays the module to save.
        buffer = io.BytesIO()
        torch.jit.save(frozen, buffer)
        buffer.seek(0)
        model.fn = torch.jit.optimize_for_inference(torch.jit.load(buffer, map_location=spec.device))
        model.script = lambda: frozen
    elif spec.variant == "inductor":
        model.fn, warmup_s = _inductor(torch, module, example, spec.device)
        details["inductor_warmup_s"] = f"{warmup_s:.3f}"
    elif spec.variant == "dynamic":
        _quantize(torch, model, ep if spec.format == "torch_export" else None, example, artifact)
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
    return [TensorInfo(n, str(a.dtype), tuple(a.shape)) for n, a in zip(names, arrays)]


def _quantize(torch: Any, model: _TorchModel, ep: Any, example: list[Any], artifact: bool) -> None:
    if ep is not None and not artifact:
        model.fn = plain_module(ep)
        count = quantize_linears(model.fn)
        # Saved as a TorchScript trace of the quantized module, so that reloading skips quantization.
        model.script = lambda: _trace(model.fn, example)
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

    def call(self, args: list[Any]) -> list[tuple[str, Any]]:
        import torch

        with torch.inference_mode():
            result = flatten_outputs(self.fn(*args))
        if self.spec.device.startswith("cuda"):
            torch.cuda.synchronize(self.spec.device)
        return result

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise CandidateError("runtime", f"missing inputs: {', '.join(missing)}")
        try:
            named = self.call([to_torch(feeds[i.name], self.spec.device, self.cast) for i in self.inputs])
            return {name: to_numpy(value, self.restore) for name, value in named}
        except Exception as exc:
            raise failure(exc, "runtime") from exc

    def save(self, directory: Path) -> Artifact:
        import torch

        spec, directory = self.spec, Path(directory)
        if self.script is not None:
            try:
                extra = {INPUTS_FILE: specs_to_json(self.inputs), OUTPUTS_FILE: specs_to_json(self.outputs)}
                torch.jit.save(self.script(), str(directory / SAVED_NAME), _extra_files=extra)
                return Artifact("torchscript", SAVED_NAME, spec.precision, spec.variant, {"artifact": "true"},
                                (SAVED_NAME,))
            except Exception as exc:
                if spec.variant != "dynamic" or spec.format != "torch_export":
                    raise failure(exc, "compile", "saving TorchScript failed: ") from exc
                (directory / SAVED_NAME).unlink(missing_ok=True)  # fall back: the loader re-quantizes the source
        # Eager and Inductor keep the source artifact; the manifest's variant makes the loader recompile.
        name = spec.model_path.name
        shutil.copyfile(spec.model_path, directory / name)
        options = {k: v for k, v in spec.options.items() if k != "artifact"}
        return Artifact(spec.format, name, spec.precision, spec.variant, options, (name,))
