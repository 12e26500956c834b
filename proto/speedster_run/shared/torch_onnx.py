"""ONNX export of a loaded torch program (ExportedProgram or ScriptModule), so that every backend competes on it.

Used by the orchestrator on the artifacts it opens itself, and by the torch backend (SaveArtifact with format
"onnx") for a model opened only in the torch runner (--trust-model).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from speedster_run.shared.types import TensorInfo
from speedster_run.shared.torch_io import flatten_outputs, to_torch

ONNX_OPSET = 18  # the dynamo exporter's own opset (lower ones go through a version converter); ORT and OpenVINO read it
LEGACY_OPSET = 17  # the TorchScript-based exporter


class OnnxExportError(RuntimeError):
    """Both exporters failed; the message is one line naming each one's error."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


def export_to_onnx(model: Any, fmt: str, inputs: list[TensorInfo], example: dict[str, np.ndarray],
                   out_path: Path) -> Path:
    """Writes out_path: inputs named as given, outputs output_0..., None dims dynamic. The dynamo exporter first (for
    a torch.export program), the TorchScript-based one when it fails; KeyError for an input missing from example."""
    from speedster_run.shared.torch_io import plain_module, trace_module

    args = tuple(to_torch(widen(info, np.asarray(example[info.name])), "cpu") for info in inputs)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    if fmt == "torch_export":
        try:
            export_dynamo(model, args, inputs, out_path)
            return out_path
        except Exception as exc:  # the TorchScript-based exporter covers some graphs dynamo's translation does not
            errors.append(f"dynamo exporter: {first_line(exc)}")
    try:
        module = model if fmt == "torchscript" else trace_module(plain_module(model), args)
        export_legacy(module, args, inputs, out_path)
    except Exception as exc:
        errors.append(f"TorchScript exporter: {first_line(exc)}")
        raise OnnxExportError("; ".join(errors)) from exc
    return out_path


def widen(info: TensorInfo, array: np.ndarray) -> np.ndarray:
    """Repeats a dynamic dim of size 1 to 2: torch.export specialises size-1 dims to constants."""
    for axis, dim in enumerate(info.shape):
        if dim is None and array.shape[axis] == 1:
            array = np.repeat(array, 2, axis=axis)
    return array


def _output_names(module: Any, args: tuple[Any, ...]) -> list[str]:
    import torch

    with quiet(), torch.inference_mode():
        count = len(flatten_outputs(module(*args)))
    return [f"output_{i}" for i in range(count)]


def _dim_name(info: TensorInfo, axis: int) -> str:
    name = info.dim_names[axis] if axis < len(info.dim_names) and info.dim_names[axis] else f"{info.name}_dim{axis}"
    name = re.sub(r"\W", "_", name)  # torch.export.Dim wants an identifier
    return name if name.isidentifier() else f"d_{name}"


def export_dynamo(ep: Any, args: tuple[Any, ...], inputs: list[TensorInfo], out_path: Path) -> None:
    import torch

    dims: dict[str, Any] = {}  # one Dim per name: inputs sharing a dim name share the dimension
    dynamic = tuple(
        {axis: dims.setdefault(_dim_name(i, axis), torch.export.Dim(_dim_name(i, axis), min=1))
         for axis, d in enumerate(i.shape) if d is None} or None
        for i in inputs)
    module = ep.module()  # re-exported with the caller's dynamic dims, which may be fewer than the program's
    with quiet():
        program = torch.onnx.export(
            module, args, dynamo=True, input_names=[i.name for i in inputs], output_names=_output_names(module, args),
            dynamic_shapes=dynamic if any(dynamic) else None, opset_version=ONNX_OPSET, verbose=False)
        program.save(str(out_path), external_data=None)  # None: external data only past the 2 GB limit


def export_legacy(module: Any, args: tuple[Any, ...], inputs: list[TensorInfo], out_path: Path) -> None:
    import torch

    outputs = _output_names(module, args)
    axes = {i.name: {a: _dim_name(i, a) for a, d in enumerate(i.shape) if d is None} for i in inputs}
    with quiet():
        torch.onnx.export(
            module, args, str(out_path), dynamo=False, input_names=[i.name for i in inputs], output_names=outputs,
            dynamic_axes={k: v for k, v in axes.items() if v} or None, opset_version=LEGACY_OPSET)
