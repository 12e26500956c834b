"""PyTorch backend: eager, frozen TorchScript, Inductor and dynamic-int8 runs of TorchScript and torch.export files."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import operator
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from runners.backends.base import (
    ARTIFACT_OPTION, Artifact, Availability, Backend, CandidateError, LoadedModel, LoadSpec, Offer, TensorInfo,
    device_kind, reloads_artifact,
)
from speedster_run.shared.errors import as_candidate_error
from speedster_run.shared.torch_io import (
    INPUTS_FILE, OUTPUTS_FILE, TRUST_OPTION, example_arrays, export_specs, flatten_outputs, load_export,
    load_torchscript, outputs_from_run, plain_module, specs_to_json, tensor_info, to_numpy, to_torch, torchscript_input_names,
    trace_module,
)

FORMATS = ("torchscript", "torch_export")
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

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        import torch

        _set_threads(torch, spec.threads)
        with quiet_jit():
            return _build(torch, spec)


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


# --- candidates ----------------------------------------------------------------------------------------------------

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
        raise as_candidate_error(exc, "compile", f"inductor compile failed: {hint}") from exc
    return compiled, time.perf_counter() - start


def _build(torch: Any, spec: LoadSpec) -> _TorchModel:
    details = {"variant": spec.variant, "precision": spec.precision, "device": spec.device,
               "threads": str(torch.get_num_threads()), "torch": torch.__version__}
    ep = None
    trusted = spec.options.get(TRUST_OPTION) == "true"  # else the file is checked to run no code of its own
    if spec.format == "torch_export":
        ep, stored = load_export(spec.model_path, spec.device, trusted)
        inputs, outputs = export_specs(ep, stored)
        module = ep.module()
    else:
        module, stored, outputs = load_torchscript(spec.model_path, spec.device, trusted)
        inputs, module = _torchscript_inputs(module, stored, spec), module.eval()  # an exported module refuses eval()
    example = [to_torch(a, spec.device) for a in example_arrays(inputs, spec.calibration)]
    model = _TorchModel(module, spec, inputs, outputs or [], details)
    model.source = ep if ep is not None else module
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
        _quantize(model, ep, example, reloads_artifact(spec))
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
    return [tensor_info(n, a) for n, a in zip(names, arrays)]


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
        self.source: Any = None  # the program as loaded (ExportedProgram or ScriptModule), for export()

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise CandidateError("runtime", f"missing inputs: {', '.join(missing)}")
        with torch.inference_mode():
            named = flatten_outputs(self.fn(*[to_torch(feeds[i.name], self.spec.device, self.cast)
                                              for i in self.inputs]))
            outputs = {name: to_numpy(value, self.restore) for name, value in named}  # .cpu() waits for the GPU
        if device_kind(self.spec.device) == "cuda":
            torch.cuda.synchronize(self.spec.device)
        return outputs

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
                    raise as_candidate_error(exc, "compile", "saving TorchScript failed: ") from exc
                (directory / SAVED_NAME).unlink(missing_ok=True)  # fall back: the loader re-quantizes the source
        # Eager and Inductor keep the source artifact: the manifest's variant makes the loader compile it again.
        # Trust is not saved: whoever loads the saved model decides again.
        shutil.copyfile(spec.model_path, directory / spec.model_path.name)
        options = {k: v for k, v in spec.options.items() if k not in (ARTIFACT_OPTION, TRUST_OPTION)}
        return Artifact(spec.format, spec.model_path.name, spec.precision, spec.variant, options,
                        (spec.model_path.name,))

    def export(self, directory: Path, fmt: str, example: dict[str, np.ndarray]) -> Artifact:
        """The source program as ONNX (what the orchestrator exports itself from files it may open)."""
        from speedster_run.shared.torch_onnx import OnnxExportError, export_to_onnx, quiet

        if fmt != "onnx" or self.spec.variant != "eager" or self.spec.precision != "fp32":
            raise CandidateError("unavailable", f"torch exports only its fp32 eager model, and only to onnx "
                                                f"(not {self.spec.precision}/{self.spec.variant} to {fmt})")
        try:
            with quiet_jit(), quiet():
                export_to_onnx(self.source, self.spec.format, self.inputs, example, Path(directory) / "model.onnx")
        except KeyError as exc:
            raise CandidateError("export", f"no example array for input {exc.args[0]!r}") from None
        except OnnxExportError as exc:
            raise CandidateError("export", f"ONNX export failed ({exc})") from exc
        files = tuple(sorted(p.name for p in Path(directory).iterdir()))  # model.onnx, and external data past 2 GB
        return Artifact("onnx", "model.onnx", "fp32", "default", {}, files)
