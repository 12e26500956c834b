"""Sample inputs: concrete shapes from the model and --input-shape, random data (seeded) or the user's .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.errors import UserError
from orchestrator.model_source import ShapeOverrides
from speedster_run.shared import tensors
from speedster_run.shared.types import TensorInfo


def parse_shape_override(text: str) -> tuple[str, tuple[tuple[int, ...], str | None]]:
    """"NAME=1x3x224x224" or "NAME=1x128:int64" -> (NAME, ((1, 3, 224, 224), dtype or None))."""
    name, sep, rest = text.partition("=")
    shape_text, _, dtype = rest.partition(":")
    if not sep or not name:
        raise UserError(f"--input-shape {text!r}: expected NAME=1x3x224x224 (optionally :dtype)")
    try:
        dims = tuple(int(d) for d in shape_text.lower().split("x")) if shape_text else ()
    except ValueError:
        raise UserError(f"--input-shape {text!r}: dimensions must be integers joined by 'x'") from None
    if any(d < 0 for d in dims):
        raise UserError(f"--input-shape {text!r}: dimensions must not be negative")
    if dtype and dtype not in tensors.NAME_TO_CODE:
        raise UserError(f"--input-shape {text!r}: unknown dtype {dtype!r}; use one of {', '.join(tensors.NAME_TO_CODE)}")
    return name, (dims, dtype or None)


def concrete_shapes(inputs: list[TensorInfo], overrides: ShapeOverrides) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every input's concrete shape and dtype. A symbolic leading (batch) dim defaults to 1; others must be given."""
    result = {}
    for info in inputs:
        dims, dtype = overrides.get(info.name, (None, None))
        dtype = dtype or info.dtype
        if dims is not None:
            if len(dims) != len(info.shape) or any(
                want is not None and want != got for want, got in zip(info.shape, dims)
            ):
                declared = "x".join("?" if d is None else str(d) for d in info.shape)
                raise UserError(
                    f"--input-shape {info.name}={'x'.join(map(str, dims))} does not fit the model's shape {declared}"
                )
        else:
            missing = [i for i, d in enumerate(info.shape) if d is None and i > 0]
            if missing:
                names = [info.dim_names[i] if i < len(info.dim_names) and info.dim_names[i] else f"dim {i}"
                         for i in missing]
                example = "x".join("1" if d is None else str(d) for d in info.shape)
                raise UserError(
                    f"input {info.name!r} has symbolic dimensions ({', '.join(names)}): "
                    f"pass --input-shape {info.name}={example} with the sizes you want measured"
                )
            dims = tuple(1 if d is None else d for d in info.shape)
        result[info.name] = (tuple(dims), dtype)
    return result


def random_array(shape: tuple[int, ...], dtype: str, rng: np.random.Generator, name: str = "") -> np.ndarray:
    """Values in a range that suits the dtype: normal floats, small non-negative integers (valid ids), coin flips.
    Transformer inputs go by their usual names: an attention mask is all ones, token type ids all zeros (a type
    vocabulary may hold just 2)."""
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(bool)
    numpy_dtype = tensors.numpy_dtype(tensors.NAME_TO_CODE[dtype])
    if numpy_dtype.kind == "f":
        return rng.standard_normal(size=shape, dtype=np.float32).astype(numpy_dtype)
    if "mask" in name:
        return np.ones(shape, dtype=numpy_dtype)
    if "type_ids" in name:
        return np.zeros(shape, dtype=numpy_dtype)
    # Small non-negative integers: valid token ids, indices and class labels for nearly every model.
    return rng.integers(0, 16, size=shape).astype(numpy_dtype)


def random_samples(shapes: dict[str, tuple[tuple[int, ...], str]], count: int, seed: int) -> list[dict[str, np.ndarray]]:
    """`count` input sets from one seeded generator, so a rerun measures the same data."""
    rng = np.random.default_rng(seed)
    return [{name: random_array(shape, dtype, rng, name) for name, (shape, dtype) in shapes.items()}
            for _ in range(count)]


def load_samples(paths: list[Path], inputs: list[TensorInfo], overrides: ShapeOverrides) -> list[dict[str, np.ndarray]]:
    """One input set per .npz file, keyed by input name, checked against the model's signature."""
    samples = []
    for path in paths:
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as error:
            raise UserError(f"--inputs {path}: not a readable .npz file ({error})") from None
        expected = {i.name for i in inputs}
        if set(arrays) != expected:
            raise UserError(
                f"--inputs {path}: holds {', '.join(sorted(arrays)) or 'nothing'}; the model's inputs are "
                f"{', '.join(sorted(expected))}"
            )
        sample_overrides = {name: (tuple(a.shape), None) for name, a in arrays.items()}
        shapes = concrete_shapes(inputs, {**overrides, **sample_overrides})
        samples.append({name: _as_declared(path, name, array, shapes[name][1]) for name, array in arrays.items()})
    return samples


def _as_declared(path: Path, name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    """The array in the input's dtype, or a UserError: converting silently would measure (and calibrate on) data the
    user never gave, e.g. float64 rounded to float32 or floats truncated to token ids."""
    expected = tensors.numpy_dtype(tensors.NAME_TO_CODE[dtype])
    if dtype == "bfloat16" and array.dtype == np.dtype("V2"):  # .npz keeps bfloat16 as raw 2-byte values
        return array.view(expected)
    if array.dtype.newbyteorder("=") != expected.newbyteorder("="):
        raise UserError(f"--inputs {path}: input {name!r} is {array.dtype}, the model takes {dtype}; save it as "
                        f"{dtype} (array.astype({dtype!r}))")
    return array.astype(expected, copy=False)  # only the byte order may change
