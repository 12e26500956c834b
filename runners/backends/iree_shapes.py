"""Specialising an ONNX model's symbolic input dims to concrete sizes, for IREE.

IREE compiles dynamic dims as such, and most models then serve any batch. Some do not compile: a torch-exported
ResNet with a symbolic batch fails in iree-compile with "'tensor.empty' op incorrect number of dynamic sizes". For
those the backend compiles again with every symbolic input dim fixed to the size the run's first calibration sample
has, and says so in the candidate's details.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from speedster_run.shared.errors import CandidateError

STATIC_NAME = "model.static.onnx"


def sample_sizes(inputs: list[dict[str, Any]], sample: dict[str, Any]) -> dict[tuple[str, int], int]:
    """(input name, axis) -> size for every symbolic input dim, read from a calibration sample. CandidateError when
    the sample lacks an input or has another rank: there is nothing to specialise to."""
    sizes: dict[tuple[str, int], int] = {}
    for item in inputs:
        dynamic = [axis for axis, dim in enumerate(item["shape"]) if dim is None]
        if not dynamic:
            continue
        if item["name"] not in sample:
            raise CandidateError("compile", f"no calibration sample for input {item['name']!r} to specialise its "
                                            "symbolic dims to")
        shape = np.shape(sample[item["name"]])
        if len(shape) != len(item["shape"]):
            raise CandidateError("compile", f"calibration sample for {item['name']!r} has shape {list(shape)}, the "
                                            f"model's input has rank {len(item['shape'])}")
        sizes.update({(item["name"], axis): int(shape[axis]) for axis in dynamic})
    return sizes


def specialised_signature(signature: dict[str, Any], sizes: dict[tuple[str, int], int]) -> dict[str, Any]:
    """The signature with the fixed dims: inputs by (name, axis), outputs through the dim names they share."""
    named = _named_sizes(signature["inputs"], sizes)

    def fixed(item: dict[str, Any], by_axis: bool) -> dict[str, Any]:
        shape = [sizes.get((item["name"], axis)) if by_axis and dim is None else dim
                 for axis, dim in enumerate(item["shape"])]
        shape = [named.get(label, dim) if dim is None and label else dim
                 for dim, label in zip(shape, item["dim_names"] or [""] * len(shape))]
        return {**item, "shape": shape}

    return {**signature, "inputs": [fixed(item, True) for item in signature["inputs"]],
            "outputs": [fixed(item, False) for item in signature["outputs"]]}


def describe(sizes: dict[tuple[str, int], int], inputs: list[dict[str, Any]]) -> str:
    """"x=1x3x32x32": the specialised inputs' shapes, as the details show them."""
    parts = []
    for item in inputs:
        if any((item["name"], axis) in sizes for axis in range(len(item["shape"]))):
            shape = [sizes.get((item["name"], axis), dim) for axis, dim in enumerate(item["shape"])]
            parts.append(f"{item['name']}={'x'.join(map(str, shape))}")
    return ",".join(parts)


def write_specialised(source: Path, target: Path, sizes: dict[tuple[str, int], int]) -> Path:
    """A copy of the model whose input dims are fixed. A dim name shared with other tensors (outputs, value_info) is
    fixed there too; the importer's shape inference works the rest out."""
    import onnx

    model = onnx.load(str(source))  # weights too: the copy is what gets imported
    inputs = {value.name: value for value in model.graph.input}
    named: dict[str, int] = {}
    for (name, axis), size in sizes.items():
        dim = inputs[name].type.tensor_type.shape.dim[axis]
        if dim.dim_param:
            named[dim.dim_param] = size
        dim.dim_value = size  # clears dim_param (a oneof)
    for value in [*model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in named:
                dim.dim_value = named[dim.dim_param]
    large = model.ByteSize() > 2**31 - 2**26  # keep clear of protobuf's 2 GiB limit
    onnx.save_model(model, str(target), save_as_external_data=large, location=f"{target.name}.data")
    return target


def _named_sizes(inputs: list[dict[str, Any]], sizes: dict[tuple[str, int], int]) -> dict[str, int]:
    named = {}
    for item in inputs:
        for axis, label in enumerate(item["dim_names"]):
            if label and (item["name"], axis) in sizes:
                named.setdefault(label, sizes[(item["name"], axis)])
    return named
