"""A torch.nn.Module or HuggingFace model, with its sample inputs, written as a torch.export archive that the
orchestrator treats like a user's `.pt2` file (and exports to ONNX for the other backends).

The archive takes the inputs positionally under their own names (a HuggingFace model's keyword inputs become
positional in the dict's order) and returns the flat list of output tensors; the output structure is kept aside
(`structure`) so the optimized model can return what the original returns. When torch.export cannot capture the
model, a TorchScript trace is tried; when neither works, the error says why.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from orchestrator.api import dynamic, structure
from orchestrator.api.input_data import Samples
from speedster_run.shared.torch_io import INPUTS_FILE, OUTPUTS_FILE, to_torch


class ModelExportError(RuntimeError):
    """The model cannot be exported for the backends; the message says which exporter failed and why."""


def forward_parameters(model: Any) -> tuple[list[str], list[str], bool]:
    """(required positional names, every name it accepts, whether it takes **kwargs / *args) of model.forward."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return [], [], True
    plain = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    required = [p.name for p in plain if p.default is p.empty and p.kind != p.KEYWORD_ONLY]
    variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)
    return required, [p.name for p in plain], variadic


def is_huggingface(model: Any) -> bool:
    return any(cls.__module__.startswith("transformers.") and cls.__name__ == "PreTrainedModel"
               for cls in type(model).__mro__)


def _flat_module(model: Any, names: list[str], as_keywords: bool, extra: dict[str, Any]) -> Any:
    """The model behind forward(<one parameter per input, named as the input>) returning a tuple of tensors: the
    exporters name the archive's inputs after forward's parameters, and TorchScript keeps those names."""
    import keyword

    import torch

    bad = [n for n in names if not n.isidentifier() or keyword.iskeyword(n) or n == "self"]
    if bad:
        raise ModelExportError(f"input name {bad[0]!r} is not a Python identifier; rename the model's inputs")

    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def call(self, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
            out = self.model(**dict(zip(names, inputs)), **extra) if as_keywords else self.model(*inputs, **extra)
            return tuple(structure.flatten(out)[0])

    # A signature with the inputs' own names can only be written out; the names are checked identifiers.
    parameters = ", ".join(names)
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {parameters}):\n    return self.call(({parameters},))\n", namespace)
    Flat.forward = namespace["forward"]
    return Flat()


def _specs(samples: Samples, axes: dynamic.DynamicAxes) -> list[dict]:
    first = samples.arrays[0]
    return [{"name": name, "dtype": str(first[name].dtype),
             "shape": [None if axis in axes.get(name, {}) else size for axis, size in enumerate(first[name].shape)],
             "dim_names": [axes[name][axis].name if axis in axes.get(name, {}) else ""
                           for axis in range(first[name].ndim)]} for name in samples.names]


def _example(samples: Samples, axes: dynamic.DynamicAxes) -> list[np.ndarray]:
    """The first sample, with each dynamic axis of size 1 grown to 2: torch.export would fix a size-1 axis."""
    grown = {name: {axis: dynamic.Axis(a.name, a.min, a.opt, max(2, samples.arrays[0][name].shape[axis]))
                    for axis, a in per.items()} for name, per in axes.items()}
    sample = dynamic.resized(samples.arrays[0], grown, "max") if axes else samples.arrays[0]
    return [sample[name] for name in samples.names]


def _dynamic_shapes(samples: Samples, axes: dynamic.DynamicAxes) -> Any:
    import torch

    dims: dict[str, Any] = {}
    per_input = tuple(
        {axis: dims.setdefault(a.name, torch.export.Dim(_identifier(a.name), min=max(a.min, 1), max=a.max))
         for axis, a in axes.get(name, {}).items()} or None for name in samples.names)
    return per_input


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "_" for c in name)
    return cleaned if cleaned.isidentifier() else f"d_{cleaned}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}"


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """HuggingFace models with eager attention while they are exported: the ONNX exporter cannot translate some
    models' SDPA graphs (T5's). The same maths; the user's model gets its settings back afterwards."""
    configs = {id(m.config): m.config for m in model.modules() if hasattr(getattr(m, "config", None),
                                                                           "_attn_implementation")}
    saved = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            config._attn_implementation = "eager"
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = saved[key]


def call_options(model: Any) -> dict[str, Any]:
    """HuggingFace models run without their key/value cache: it is state for generation loops, not an output."""
    accepted = forward_parameters(model)[1]
    return {"use_cache": False} if is_huggingface(model) and "use_cache" in accepted else {}


@contextlib.contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """The model in eval mode (no dropout, batch norm's running statistics), its own mode restored afterwards."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def export(model: Any, samples: Samples, axes: dynamic.DynamicAxes, out_dir: Path) -> tuple[Path, dict]:
    """(the archive, the output structure). Tries torch.export, then a TorchScript trace."""
    if any(p.device.type != "cpu" for p in model.parameters()):
        import copy  # the archive is a CPU program, portable to every runner; the user's model stays where it is

        model = copy.deepcopy(model).to("cpu")
    with evaluating(model), (_eager_attention(model) if is_huggingface(model) else contextlib.nullcontext()):
        return _export(model, samples, axes, out_dir)


def _export(model: Any, samples: Samples, axes: dynamic.DynamicAxes, out_dir: Path) -> tuple[Path, dict]:
    import torch

    from speedster_run.shared.torch_onnx import quiet as _quiet

    extra = call_options(model)
    flat = _flat_module(model, samples.names, samples.as_keywords, extra)
    args = tuple(to_torch(a, "cpu") for a in _example(samples, axes))
    with _quiet(), torch.inference_mode():
        try:
            original = (model(**dict(zip(samples.names, args)), **extra) if samples.as_keywords
                        else model(*args, **extra))
        except Exception as error:
            shapes = ", ".join(f"{n}={tuple(a.shape)}" for n, a in zip(samples.names, args))
            raise ModelExportError(f"the model failed on input_data[0] ({shapes}): {_first_line(error)}") from None
    leaves, output_structure = structure.flatten(original)
    specs = json.dumps(_specs(samples, axes))
    errors = []
    path = out_dir / "model.pt2"
    try:
        with _quiet():
            program = torch.export.export(flat, args, dynamic_shapes=_dynamic_shapes(samples, axes) if axes else None)
            with open(path, "wb") as file:
                torch.export.save(program, file, extra_files={INPUTS_FILE: specs})
        return path, output_structure
    except Exception as error:
        errors.append(f"torch.export: {_first_line(error)}")
    path = out_dir / "model.torchscript.pt"
    try:
        with _quiet(), torch.no_grad():
            # A trace records one path through the code: a TracerWarning (data-dependent control flow, a tensor
            # read as a Python number) means it may be wrong for other inputs, so it is a failure here.
            warnings.simplefilter("error", torch.jit.TracerWarning)
            traced = torch.jit.trace(flat, args, strict=False)
            outputs = [{"name": f"output_{i}", "dtype": str(leaf.dtype).removeprefix("torch."),
                        "shape": list(leaf.shape), "dim_names": []} for i, leaf in enumerate(leaves)]
            torch.jit.save(traced, str(path), _extra_files={INPUTS_FILE: specs, OUTPUTS_FILE: json.dumps(outputs)})
        return path, output_structure
    except Exception as error:
        errors.append(f"TorchScript trace: {_first_line(error)}")
    raise ModelExportError("the model cannot be exported for the backends (" + "; ".join(errors) + "). Models with "
                           "data-dependent control flow or non-tensor inputs need changes before they can be compiled")
