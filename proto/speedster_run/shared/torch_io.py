"""Torch artifacts on disk and tensors across the numpy boundary: shared by the torch backend and the orchestrator."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from speedster_run.shared import export_archive
from speedster_run.shared.devices import device_kind
from speedster_run.shared.tensors import NAME_TO_CODE, numpy_dtype
from speedster_run.shared.types import TensorInfo

# Input/output specs stored in our archives (and the zoo's): TorchScript files carry no shapes or dtypes, and
# torch.export keeps symbol names (s77) instead of the Dim names the exporter chose.
INPUTS_FILE = "speedster_run/inputs.json"
OUTPUTS_FILE = "speedster_run/outputs.json"
# The load option that opens a torch file without export_archive's checks. The orchestrator sends it only to a runner
# in a container or on another host, for --trust-model; it is never saved, and saved models refuse it.
TRUST_OPTION = "trust_model"


def specs_to_json(infos: list[TensorInfo]) -> str:
    return json.dumps([{"name": i.name, "dtype": i.dtype, "shape": list(i.shape), "dim_names": list(i.dim_names)}
                       for i in infos])


def specs_from_json(text: str | bytes) -> list[TensorInfo] | None:
    return [TensorInfo(d["name"], d["dtype"], tuple(d["shape"]), tuple(d.get("dim_names") or ()))
            for d in json.loads(text)] if text else None


def tensor_info(name: str, value: Any, rename: dict[str, str] | None = None) -> TensorInfo:
    """TensorInfo of a (fake) tensor or array; a symbolic dim becomes None, named after its symbol."""
    if not hasattr(value, "dtype"):
        raise ValueError(f"{name} is not a tensor ({type(value).__name__}); only tensors are supported")
    shape = tuple(d if isinstance(d, int) else None for d in value.shape)
    names = tuple("" if isinstance(d, int) else (rename or {}).get(str(d), str(d)) for d in value.shape)
    return TensorInfo(name, str(value.dtype).removeprefix("torch."), shape, names)


def load_export(path: Path, device: str = "cpu", trusted: bool = False) -> tuple[Any, list[TensorInfo] | None]:
    """The ExportedProgram, moved to `device`, and the input specs stored in it (if any). Unless `trusted`, the
    archive is first checked to hold nothing that runs code (export_archive), and the program after loading."""
    import torch

    extra = {INPUTS_FILE: ""}
    with open(path, "rb") as file:  # a file object: torch.export.load warns about names not ending in .pt2
        if not trusted:  # checked and loaded through one open file: what was checked is what torch reads
            export_archive.check_archive(file, Path(path).name)
        ep = torch.export.load(file, extra_files=extra)
    if device_kind(device) != "cpu":
        ep = torch.export.passes.move_to_device_pass(ep, device)
    if not trusted:  # on the program returned: it makes its module() build no guard code
        export_archive.check_program(ep, Path(path).name)
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
            symbols = tensor_info(name, values[name]).dim_names
            rename.update({symbol: s for symbol, s in zip(symbols, saved.dim_names) if symbol and s})
    inputs = [tensor_info(n, values[u], rename) for n, u in zip(names, user)]
    leaves = [a.meta.get("val") for a in next(n for n in ep.graph.nodes if n.op == "output").args[0]]
    tree = tree_unflatten(leaves, ep.call_spec.out_spec) if ep.call_spec.out_spec else leaves
    return inputs, [tensor_info(name, value, rename) for name, value in flatten_outputs(tree)]


def load_torchscript(path: Path, device: str = "cpu", trusted: bool = False
                     ) -> tuple[Any, list[TensorInfo] | None, list[TensorInfo] | None]:
    """The ScriptModule and the input / output specs stored in its archive (if any); unless `trusted`, an archive
    whose code reads host files is refused (export_archive.check_torchscript)."""
    import torch

    extra = {INPUTS_FILE: "", OUTPUTS_FILE: ""}
    with open(path, "rb") as file:
        if not trusted:
            export_archive.check_torchscript(file, Path(path).name)
        module = torch.jit.load(file, map_location=device, _extra_files=extra)
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
    infos = [tensor_info(name, value) for name, value in named]
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


def plain_module(ep: Any) -> Any:
    """ep.module() without its input-constraint hook, which torch.jit.trace cannot run (it reads SymInts)."""
    from torch.export._unlift import _check_input_constraints_pre_hook

    module = ep.module(check_guards=False)
    for key, hook in list(module._forward_pre_hooks.items()):
        if hook is _check_input_constraints_pre_hook:
            del module._forward_pre_hooks[key]
            module._forward_pre_hooks_with_kwargs.pop(key, None)
    return module


def trace_module(module: Any, example: list[Any] | tuple[Any, ...]) -> Any:
    import torch

    with warnings.catch_warnings():  # deprecation, and tracer warnings about the guards of exported modules
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, tuple(example), check_trace=False)
