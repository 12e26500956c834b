"""Torch-side helpers for the orchestrator: recognise, inspect and export TorchScript and torch.export files to ONNX."""

from __future__ import annotations

import dataclasses
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from speedster_run.shared.types import TensorInfo
from speedster_run.shared.export_archive import UntrustedArchiveError
from speedster_run.shared.torch_io import (
    example_arrays, export_specs, flatten_outputs, load_export, load_torchscript, outputs_from_run, to_torch,
    torchscript_input_names,
)
from speedster_run.shared.torch_onnx import OnnxExportError, export_to_onnx, first_line, quiet


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
    # Members sit under one top-level folder; an ExportedProgram has models/<name>.json (archives from torch < 2.6:
    # serialized_exported_program.json, at the root); TorchScript has code/ beside data.pkl, which plain torch.save
    # files lack.
    inner = {name.partition("/")[2] for name in names}
    if any(re.fullmatch(r"models/[^/]+\.json", n) for n in inner) or "serialized_exported_program.json" in names:
        return "torch_export"
    if "data.pkl" in inner and any(n.startswith("code/") for n in inner):
        return "torchscript"
    return None


def _load(path: Path, fmt: str) -> tuple[Any, list[TensorInfo] | None, list[TensorInfo] | None]:
    """(ExportedProgram or ScriptModule, stored inputs, stored outputs); TorchArtifactError if unreadable."""
    kinds = {"torch_export": "torch.export archive", "torchscript": "TorchScript archive"}
    if fmt not in kinds:
        raise TorchArtifactError(f"{path.name}: unknown torch format {fmt!r}; expected one of {', '.join(kinds)}")
    try:
        with quiet():
            if fmt == "torch_export":
                return (*load_export(path), None)
            return load_torchscript(path)
    except UntrustedArchiveError as exc:
        raise TorchArtifactError(str(exc)) from None
    except Exception as exc:
        raise TorchArtifactError(f"{path.name} is not a readable {kinds[fmt]}: {first_line(exc)}") from exc


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
        raise TorchArtifactError(f"{path.name}: cannot describe its inputs: {first_line(exc)}") from exc
    if inputs is None:
        if stored and len(stored) == len(names):
            inputs = [dataclasses.replace(s, name=n) for s, n in zip(stored, names)]
        elif all(n in shape_overrides for n in names):
            inputs = [TensorInfo(n, "float32", tuple(shape_overrides[n][0])) for n in names]
        else:
            flags = " ".join(f"--input-shape {n}=1x3x224x224" for n in names)
            raise TorchArtifactError(f"{path.name} stores no input shapes: pass {flags} (one per input, with your "
                                     "real sizes; append :int64 etc. for non-float inputs)")
    inputs = apply_overrides(path.name, inputs, shape_overrides)
    if outputs is None:  # TorchScript: run once on zeros (of the overridden shapes) to learn the outputs
        # Symbolic dims run as 2, not 1: outputs_from_run spots the batch dim by its size, and 1 is too common.
        concrete = [TensorInfo(i.name, i.dtype, shape_overrides.get(i.name, ([d or 2 for d in i.shape],))[0])
                    for i in inputs]
        outputs = _run_outputs(path, model, inputs, example_arrays(concrete, []))
    return inputs, outputs


def apply_overrides(name: str, inputs: list[TensorInfo],
                    overrides: dict[str, tuple[tuple[int, ...], str | None]]) -> list[TensorInfo]:
    """The inputs with the overrides' dtypes, once each override names an input and its shape fits the declared one."""
    names = [i.name for i in inputs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TorchArtifactError(f"{name} has no input named {', '.join(unknown)}; its inputs: {', '.join(names)}")
    return [_override(name, i, overrides.get(i.name)) for i in inputs]


def _override(name: str, info: TensorInfo, override: tuple[tuple[int, ...], str | None] | None) -> TensorInfo:
    if override is None:
        return info
    shape = tuple(int(d) for d in override[0])
    if len(shape) != len(info.shape) or any(d is not None and d != s for d, s in zip(info.shape, shape)):
        want = "x".join("?" if d is None else str(d) for d in info.shape)
        raise TorchArtifactError(f"{name}: input {info.name} has shape {want}; "
                                 f"--input-shape {info.name}={'x'.join(map(str, shape))} does not fit it")
    return dataclasses.replace(info, dtype=override[1] or info.dtype)


def _run_outputs(path: Path, model: Any, inputs: list[TensorInfo], arrays: list[np.ndarray]) -> list[TensorInfo]:
    import torch

    try:
        with quiet(), torch.inference_mode():
            named = flatten_outputs(model(*[to_torch(a, "cpu") for a in arrays]))
    except Exception as exc:
        shapes = ", ".join(f"{i.name}={'x'.join(map(str, a.shape))}" for i, a in zip(inputs, arrays))
        raise TorchArtifactError(f"{path.name} failed on zero inputs ({shapes}): {first_line(exc)}; check "
                                 "--input-shape") from exc
    return outputs_from_run(named, inputs, arrays)


def export_onnx(path: Path, fmt: str, inputs: list[TensorInfo], example: dict[str, np.ndarray], out_path: Path) -> Path:
    """Exports a torch artifact to ONNX: inputs named as given, outputs output_0..., None dims dynamic."""
    path = Path(path)
    try:
        model, _, _ = _load(path, fmt)
        export_to_onnx(model, fmt, inputs, example, out_path)
    except TorchArtifactError as exc:
        raise TorchExportError(str(exc)) from exc
    except KeyError as exc:
        raise TorchExportError(f"{path.name}: no example array for input {exc.args[0]!r}") from exc
    except OnnxExportError as exc:
        raise TorchExportError(f"{path.name}: ONNX export failed ({exc})") from exc
    return check_onnx_export(path, Path(out_path))


def check_onnx_export(path: Path, onnx_path: Path) -> Path:
    """The exported file, once the ONNX checker accepts it; TorchExportError otherwise."""
    import onnx

    try:
        onnx.checker.check_model(str(onnx_path))  # by path: works past the 2 GB protobuf limit
    except Exception as exc:
        raise TorchExportError(f"{path.name}: the exported ONNX model is invalid: {first_line(exc)}") from exc
    return onnx_path
