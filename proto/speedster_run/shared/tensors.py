"""Tensors on the wire: numpy arrays <-> protocol `Tensor` messages (raw little-endian row-major bytes)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from speedster_run.runner.v1 import runner_pb2 as pb

# One table for every dtype ONNX models use; bfloat16 has no numpy dtype of its own, ml_dtypes provides it.
_DTYPES: dict[int, np.dtype] = {
    pb.DATA_TYPE_FLOAT32: np.dtype("<f4"),
    pb.DATA_TYPE_FLOAT16: np.dtype("<f2"),
    pb.DATA_TYPE_BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    pb.DATA_TYPE_FLOAT64: np.dtype("<f8"),
    pb.DATA_TYPE_INT8: np.dtype("i1"),
    pb.DATA_TYPE_INT16: np.dtype("<i2"),
    pb.DATA_TYPE_INT32: np.dtype("<i4"),
    pb.DATA_TYPE_INT64: np.dtype("<i8"),
    pb.DATA_TYPE_UINT8: np.dtype("u1"),
    pb.DATA_TYPE_UINT16: np.dtype("<u2"),
    pb.DATA_TYPE_UINT32: np.dtype("<u4"),
    pb.DATA_TYPE_UINT64: np.dtype("<u8"),
    pb.DATA_TYPE_BOOL: np.dtype("?"),
}
_BY_NUMPY = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}

# Short names used in the CLI, reports and manifests.
DTYPE_NAMES: dict[int, str] = {
    pb.DATA_TYPE_FLOAT32: "float32",
    pb.DATA_TYPE_FLOAT16: "float16",
    pb.DATA_TYPE_BFLOAT16: "bfloat16",
    pb.DATA_TYPE_FLOAT64: "float64",
    pb.DATA_TYPE_INT8: "int8",
    pb.DATA_TYPE_INT16: "int16",
    pb.DATA_TYPE_INT32: "int32",
    pb.DATA_TYPE_INT64: "int64",
    pb.DATA_TYPE_UINT8: "uint8",
    pb.DATA_TYPE_UINT16: "uint16",
    pb.DATA_TYPE_UINT32: "uint32",
    pb.DATA_TYPE_UINT64: "uint64",
    pb.DATA_TYPE_BOOL: "bool",
}


class TensorFormatError(ValueError):
    """A tensor message that cannot be decoded: unknown dtype or bytes that do not match the shape."""


def numpy_dtype(code: int) -> np.dtype:
    """The numpy dtype of a protocol DataType code."""
    try:
        return _DTYPES[code]
    except KeyError:
        raise TensorFormatError(f"unsupported data type code {code}") from None


def dtype_code(dtype: np.dtype | str | type) -> int:
    """The protocol DataType code of a numpy dtype (or of a name such as "float32" / "bfloat16")."""
    if isinstance(dtype, str) and dtype in NAME_TO_CODE:
        return NAME_TO_CODE[dtype]
    try:
        dt = np.dtype(dtype).newbyteorder("=")
        return _BY_NUMPY[dt]
    except (KeyError, TypeError):  # TypeError: a name numpy does not know ("string")
        raise TensorFormatError(f"unsupported data type {dtype}") from None


NAME_TO_CODE = {name: code for code, name in DTYPE_NAMES.items()}


def dtype_name(dtype: np.dtype | int) -> str:
    """"float32", "bfloat16", ... for a numpy dtype or a protocol code."""
    code = dtype if isinstance(dtype, int) else dtype_code(dtype)
    return DTYPE_NAMES[code]


def to_proto(name: str, array: np.ndarray) -> pb.Tensor:
    """Encodes an array (any layout or byte order) as a Tensor message."""
    array = np.asarray(array)
    code = dtype_code(array.dtype)
    wire = array.astype(_DTYPES[code], copy=False)
    return pb.Tensor(name=name, dtype=code, shape=list(array.shape), data=np.ascontiguousarray(wire).tobytes())


def from_proto(tensor: pb.Tensor) -> np.ndarray:
    """Decodes a Tensor message, checking that its byte count matches dtype and shape."""
    dtype = numpy_dtype(tensor.dtype)
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorFormatError(f"tensor {tensor.name!r}: negative dimension in shape {list(shape)}")
    # Python integers: np.prod in int64 wraps on huge shapes and could make a bogus shape look consistent.
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.data) != expected:
        raise TensorFormatError(
            f"tensor {tensor.name!r}: {len(tensor.data)} bytes, expected {expected} for "
            f"{DTYPE_NAMES[tensor.dtype]}{list(shape)}"
        )
    # A copy, so callers own writable memory that outlives the message.
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).copy()


def set_to_proto(arrays: dict[str, np.ndarray]) -> pb.TensorSet:
    """Encodes named arrays, keeping their order."""
    return pb.TensorSet(tensors=[to_proto(name, array) for name, array in arrays.items()])


def set_from_proto(tensors: pb.TensorSet) -> dict[str, np.ndarray]:
    """Decodes a TensorSet; duplicate names are a format error."""
    out: dict[str, np.ndarray] = {}
    for tensor in tensors.tensors:
        if tensor.name in out:
            raise TensorFormatError(f"tensor {tensor.name!r} given twice")
        out[tensor.name] = from_proto(tensor)
    return out
