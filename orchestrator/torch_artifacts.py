"""Torch-side helpers for the orchestrator: recognise, inspect and export TorchScript and torch.export files to ONNX."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from runners.backends.base import TensorInfo
from runners.backends.torch import plain_module, trace_module
from runners.backends.torch_io import (
    example_arrays, export_specs, flatten_outputs, load_export, load_torchscript, outputs_from_run, to_torch,
    torchscript_input_names,
)

ONNX_OPSET = 18  # the dynamo exporter's own opset (lower ones go through a version converter); ORT and OpenVINO read it
LEGACY_OPSET = 17  # the TorchScript-based exporter


class TorchArtifactError(ValueError):
    """A torch artifact that cannot be read or described; the message is one actionable line."""


class TorchExportError(RuntimeError):
    """A torch artifact that could not be exported to ONNX; the message is one line."""


def detect_format(path: Path) -> str | None:
    """"torch_export" for a torch.export archive, "torchscript" for a TorchScript archive, None otherwise."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    # Members sit under one top-level folder; an ExportedProgram has models/<name>.json (serialized_exported_program
    # .json in archives from torch < 2.6); TorchScript has code/ beside data.pkl, which plain torch.save files lack.
    inner = {name.partition("/")[2] for name in names}
    if any(re.fullmatch(r"models/[^/]+\.json", n) for n in inner) or "serialized_exported_program.json" in inner:
        return "torch_export"
    if "data.pkl" in inner and any(n.startswith("code/") for n in inner):
        return "torchscript"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silences torch's deprecation warnings and the exporters' progress prints; errors still propagate."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        registration.setLevel(level)


def _load(path: Path, fmt: str) -> tuple[Any, list[TensorInfo] | None, list[TensorInfo] | None]:
    """(ExportedProgram or ScriptModule, stored inputs, stored outputs); TorchArtifactError if unreadable."""
    kinds = {"torch_export": "torch.export archive", "torchscript": "TorchScript archive"}
    if fmt not in kinds:
        raise TorchArtifactError(f"{path.name}: unknown torch format {fmt!r}; expected one of {', '.join(kinds)}")
    try:
        with _quiet():
            if fmt == "torch_export":
                return (*load_export(path), None)
            return load_torchscript(path)
    except Exception as exc:
        raise TorchArtifactError(f"{path.name} is not a readable {kinds[fmt]}: {_first_line(exc)}") from exc


def inspect_torch_artifact(
    path: Path, fmt: str, shape_overrides: dict[str, tuple[tuple[int, ...], str | None]]
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs of a torch artifact. Declared shapes stay symbolic (the caller picks concrete sizes);
    overrides (name -> (shape, dtype or None)) are checked against them, and supply what a TorchScript file lacks."""
    path = Path(path)
    model, stored, outputs = _load(path, fmt)
    try:
        inputs, outputs = export_specs(model, stored) if fmt == "torch_export" else (None, outputs)
        names = [i.name for i in inputs] if inputs is not None else torchscript_input_names(model)
    except Exception as exc:  # non-tensor inputs, an unusual signature...
        raise TorchArtifactError(f"{path.name}: cannot describe its inputs: {_first_line(exc)}") from exc
    if inputs is None:
        if stored and len(stored) == len(names):
            inputs = [dataclasses.replace(s, name=n) for s, n in zip(stored, names)]
        elif all(n in shape_overrides for n in names):
            inputs = [TensorInfo(n, "float32", tuple(shape_overrides[n][0])) for n in names]
        else:
            flags = " ".join(f"--input-shape {n}=1x3x224x224" for n in names)
            raise TorchArtifactError(f"{path.name} stores no input shapes: pass {flags} (one per input, with your "
                                     "real sizes; append :int64 etc. for non-float inputs)")
    unknown = sorted(set(shape_overrides) - set(names))
    if unknown:
        raise TorchArtifactError(f"{path.name} has no input named {', '.join(unknown)}; its inputs: {', '.join(names)}")
    inputs = [_override(path, i, shape_overrides.get(i.name)) for i in inputs]
    if outputs is None:  # TorchScript: run once on zeros (of the overridden shapes) to learn the outputs
        # Symbolic dims run as 2, not 1: outputs_from_run spots the batch dim by its size, and 1 is too common.
        concrete = [TensorInfo(i.name, i.dtype, shape_overrides.get(i.name, ([d or 2 for d in i.shape],))[0])
                    for i in inputs]
        outputs = _run_outputs(path, model, inputs, example_arrays(concrete, []))
    return inputs, outputs


def _override(path: Path, info: TensorInfo, override: tuple[tuple[int, ...], str | None] | None) -> TensorInfo:
    """The input with the override's dtype, once the override's shape is known to fit the declared one."""
    if override is None:
        return info
    shape = tuple(int(d) for d in override[0])
    if len(shape) != len(info.shape) or any(d is not None and d != s for d, s in zip(info.shape, shape)):
        want = "x".join("?" if d is None else str(d) for d in info.shape)
        raise TorchArtifactError(f"{path.name}: input {info.name} has shape {want}; "
                                 f"--input-shape {info.name}={'x'.join(map(str, shape))} does not fit it")
    return dataclasses.replace(info, dtype=override[1] or info.dtype)


def _run_outputs(path: Path, model: Any, inputs: list[TensorInfo], arrays: list[np.ndarray]) -> list[TensorInfo]:
    import torch

    try:
        with _quiet(), torch.inference_mode():
            named = flatten_outputs(model(*[to_torch(a, "cpu") for a in arrays]))
    except Exception as exc:
        shapes = ", ".join(f"{i.name}={'x'.join(map(str, a.shape))}" for i, a in zip(inputs, arrays))
        raise TorchArtifactError(f"{path.name} failed on zero inputs ({shapes}): {_first_line(exc)}; check "
                                 "--input-shape") from exc
    return outputs_from_run(named, inputs, arrays)


def export_onnx(path: Path, fmt: str, inputs: list[TensorInfo], example: dict[str, np.ndarray], out_path: Path) -> Path:
    """Exports a torch artifact to ONNX: inputs named as given, outputs output_0..., None dims dynamic."""
    import onnx

    path, out_path = Path(path), Path(out_path)
    try:
        model, _, _ = _load(path, fmt)
        args = tuple(to_torch(_widen(info, np.asarray(example[info.name])), "cpu") for info in inputs)
    except TorchArtifactError as exc:
        raise TorchExportError(str(exc)) from exc
    except KeyError as exc:
        raise TorchExportError(f"{path.name}: no example array for input {exc.args[0]!r}") from exc
    out_path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    if fmt == "torch_export":
        try:
            _export_dynamo(model, args, inputs, out_path)
        except Exception as exc:  # the TorchScript-based exporter covers some graphs dynamo's translation does not
            errors.append(f"dynamo exporter: {_first_line(exc)}")
    if fmt == "torchscript" or errors:
        try:
            module = model if fmt == "torchscript" else trace_module(plain_module(model), args)
            _export_legacy(module, args, inputs, out_path)
        except Exception as exc:
            errors.append(f"TorchScript exporter: {_first_line(exc)}")
            raise TorchExportError(f"{path.name}: ONNX export failed ({'; '.join(errors)})") from exc
    try:
        onnx.checker.check_model(str(out_path))  # by path: works past the 2 GB protobuf limit
    except Exception as exc:
        raise TorchExportError(f"{path.name}: the exported ONNX model is invalid: {_first_line(exc)}") from exc
    return out_path


def _widen(info: TensorInfo, array: np.ndarray) -> np.ndarray:
    """Repeats a dynamic dim of size 1 to 2: torch.export specialises size-1 dims to constants."""
    for axis, dim in enumerate(info.shape):
        if dim is None and array.shape[axis] == 1:
            array = np.repeat(array, 2, axis=axis)
    return array


def _output_names(module: Any, args: tuple[Any, ...]) -> list[str]:
    import torch

    with _quiet(), torch.inference_mode():
        count = len(flatten_outputs(module(*args)))
    return [f"output_{i}" for i in range(count)]


def _dim_name(info: TensorInfo, axis: int) -> str:
    name = info.dim_names[axis] if axis < len(info.dim_names) and info.dim_names[axis] else f"{info.name}_dim{axis}"
    name = re.sub(r"\W", "_", name)  # torch.export.Dim wants an identifier
    return name if name.isidentifier() else f"d_{name}"


def _export_dynamo(ep: Any, args: tuple[Any, ...], inputs: list[TensorInfo], out_path: Path) -> None:
    import torch

    dims: dict[str, Any] = {}  # one Dim per name: inputs sharing a dim name share the dimension
    dynamic = tuple(
        {axis: dims.setdefault(_dim_name(i, axis), torch.export.Dim(_dim_name(i, axis), min=1))
         for axis, d in enumerate(i.shape) if d is None} or None
        for i in inputs)
    module = ep.module()  # re-exported with the caller's dynamic dims, which may be fewer than the program's
    with _quiet():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=[i.name for i in inputs], output_names=_output_names(module, args),
            dynamic_shapes=dynamic if any(dynamic) else None, opset_version=ONNX_OPSET, verbose=False)
        program.save(str(out_path), external_data=None)  # None: external data only past the 2 GB limit


def _export_legacy(module: Any, args: tuple[Any, ...], inputs: list[TensorInfo], out_path: Path) -> None:
    import torch

    outputs = _output_names(module, args)
    axes = {i.name: {a: _dim_name(i, a) for a, d in enumerate(i.shape) if d is None} for i in inputs}
    with _quiet():
        torch.onnx.export(
            module, args, str(out_path), dynamo=False, input_names=[i.name for i in inputs], output_names=outputs,
            dynamic_axes={k: v for k, v in axes.items() if v} or None, opset_version=LEGACY_OPSET)
