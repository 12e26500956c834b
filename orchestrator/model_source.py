"""The user's model: detect its format, read its inputs and outputs, refuse what cannot be read."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

from orchestrator.errors import UserError
from speedster_run.shared.types import TensorInfo
from speedster_run.shared.files import sha256_file

ONNX = "onnx"
TORCHSCRIPT = "torchscript"
TORCH_EXPORT = "torch_export"

# Shape overrides from --input-shape: name -> (dims, dtype or None).
ShapeOverrides = dict[str, tuple[tuple[int, ...], str | None]]


@dataclasses.dataclass(frozen=True)
class SourceModel:
    path: Path
    format: str
    sha256: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


def detect_format(path: Path) -> str:
    """ONNX unless the file is a zip archive, which must then be a TorchScript or torch.export (.pt2) file."""
    if not zipfile.is_zipfile(path):
        return ONNX
    from orchestrator.torch_artifacts import detect_format as detect_torch_format  # reads zip names, no torch

    fmt = detect_torch_format(path)
    if fmt is None:
        raise UserError(f"{path} is a zip archive but neither a TorchScript nor a torch.export (.pt2) file")
    return fmt


_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
    10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
}


def _onnx_value_info(value) -> TensorInfo:
    tensor_type = value.type.tensor_type
    dtype = _ONNX_DTYPES.get(tensor_type.elem_type)
    if dtype is None:
        raise UserError(f"tensor {value.name!r} has ONNX element type {tensor_type.elem_type}, which is not supported")
    shape: list[int | None] = []
    names: list[str] = []
    for dim in tensor_type.shape.dim:
        fixed = dim.HasField("dim_value") and dim.dim_value >= 0
        shape.append(int(dim.dim_value) if fixed else None)
        names.append("" if fixed else (dim.dim_param or f"{value.name}_dim{len(shape) - 1}"))
    return TensorInfo(value.name, dtype, tuple(shape), tuple(names))


def inspect_onnx(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs (without initializers) and outputs of an ONNX file; external data is not read."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError, OSError...
        raise _invalid_onnx(path, error) from None
    external_files(path, model)
    try:
        # By path, so the checker finds external data next to the file and handles models over 2 GB.
        onnx.checker.check_model(str(path))
    except Exception as error:  # ValidationError...
        raise _invalid_onnx(path, error) from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = [_onnx_value_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_onnx_value_info(v) for v in model.graph.output]
    return inputs, outputs


def _invalid_onnx(path: Path, error: Exception) -> UserError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return UserError(f"{path} is not a valid ONNX model ({reason[:200]}); re-export it or check the file")


def external_files(path: Path, model=None) -> list[str]:
    """The external data files an ONNX file names, relative to its directory. A location that leaves the directory
    (an absolute path, `..`, a symlink to elsewhere) is a UserError: nothing outside it is read or streamed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False) if model is None else model
    locations = {entry.value for init in model.graph.initializer for entry in init.external_data
                 if entry.key == "location"}
    directory = path.parent.resolve()
    for location in sorted(locations):
        target = (directory / location).resolve()
        if target != directory and directory in target.parents and ".." not in Path(location).parts:
            continue
        raise UserError(f"{path}: its external data location {location!r} is outside the model's directory "
                        f"{path.parent}; keep the data files beside the model and re-save it with relative locations")
    return sorted(locations)


def model_files(path: Path, fmt: str) -> list[str]:
    """The files that make up a model, relative to its directory: the file itself plus an ONNX file's external data."""
    return [path.name] + (external_files(path) if fmt == ONNX else [])


def model_format(path: Path) -> str:
    """The format of the file at `path`; UserError when there is no such file."""
    if not path.exists():
        raise UserError(f"model file {path} does not exist")
    if not path.is_file():
        raise UserError(f"{path} is not a file: give the path of an .onnx, TorchScript or .pt2 file")
    return detect_format(path)


def open_model(path: Path, overrides: ShapeOverrides) -> SourceModel:
    """Reads the model's signature here (a torch file through the checks of proto/speedster_run/shared/export_archive.py); any
    unreadable model is a UserError with one actionable line."""
    fmt = model_format(path)
    if fmt == ONNX:
        inputs, outputs = inspect_onnx(path)
    else:
        from orchestrator.torch_artifacts import TorchArtifactError, inspect_torch_artifact

        try:
            inputs, outputs = inspect_torch_artifact(path, fmt, overrides)
        except TorchArtifactError as error:
            raise UserError(str(error)) from None
    unknown = set(overrides) - {i.name for i in inputs}
    if unknown:
        raise UserError(
            f"--input-shape names {', '.join(sorted(unknown))}, but the model's inputs are "
            f"{', '.join(i.name for i in inputs)}"
        )
    return SourceModel(path=path, format=fmt, sha256=sha256_file(path), inputs=inputs, outputs=outputs)
