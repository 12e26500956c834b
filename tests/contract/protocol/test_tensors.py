"""The tensor codec: every dtype bit-exact through to_proto/from_proto, malformed messages refused, and the same round
trip through a real gRPC runner (ONNX Runtime Identity nodes, and the echo backend for what ORT cannot take)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from speedster_run.shared import tensors
from speedster_run.shared.tensors import TensorFormatError
from speedster_run.runner.v1 import runner_pb2 as pb
from tests.contract.protocol.support import TIMEOUT_S
from tests.contract.protocol.models import ORT_DTYPES, identity_model

ALL_DTYPES = ["float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64",
              "uint8", "uint16", "uint32", "uint64", "bool"]
SHAPES = [(), (0, 3), (2, 3, 4)]


def np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def sample(name: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that catch a lossy codec: extremes, NaN, infinities, -0.0 and subnormals for floats."""
    rng = np.random.default_rng(seed)
    dtype = np_dtype(name)
    size = math.prod(shape)
    if name == "bool":
        flat = rng.integers(0, 2, size).astype(bool)
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, size, dtype=dtype, endpoint=True)
        flat[: min(size, 2)] = [info.min, info.max][: min(size, 2)]
    else:
        info = ml_dtypes.finfo(dtype)
        special = np.array([np.nan, np.inf, -np.inf, -0.0, float(info.max), float(info.smallest_subnormal)])
        flat = np.concatenate([special, rng.normal(0, 100, size)])[:size].astype(dtype)
    return flat.reshape(shape)


def bits(array: np.ndarray) -> bytes:
    """The array's little-endian row-major bytes: equality of these is bit-exact equality (NaN included)."""
    array = np.asarray(array)
    little = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 and array.dtype.kind != "V" else array.dtype
    return np.ascontiguousarray(array.astype(little, copy=False)).tobytes()


def assert_same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert tensors.dtype_name(got.dtype) == tensors.dtype_name(want.dtype)
    assert bits(got) == bits(want)


# -- the codec alone ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=["scalar", "zero_size", "3d"])
@pytest.mark.parametrize("name", ALL_DTYPES)
def test_round_trip_is_bit_exact(name, shape):
    array = sample(name, shape)
    message = tensors.to_proto("t", array)
    assert message.name == "t"
    assert message.dtype == tensors.NAME_TO_CODE[name]
    assert list(message.shape) == list(shape)
    assert len(message.data) == math.prod(shape) * array.dtype.itemsize
    # Survives serialisation to bytes, as it does on the wire.
    decoded = tensors.from_proto(pb.Tensor.FromString(message.SerializeToString()))
    assert_same(decoded, array)
    assert decoded.flags.writeable and decoded.flags.c_contiguous


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_non_contiguous_input(name):
    base = sample(name, (4, 6, 2), seed=1)
    view = base.transpose(2, 0, 1)[:, ::2, 1::3]
    assert not view.flags.c_contiguous
    decoded = tensors.from_proto(tensors.to_proto("v", view))
    assert_same(decoded, np.ascontiguousarray(view))


@pytest.mark.parametrize("name", [n for n in ALL_DTYPES if np_dtype(n).itemsize > 1 and n != "bfloat16"])
def test_big_endian_input(name):
    native = sample(name, (3, 5), seed=2)
    big = native.astype(native.dtype.newbyteorder(">"))
    assert big.dtype.byteorder == ">"
    message = tensors.to_proto("b", big)
    assert message.data == bits(native)  # little-endian on the wire whatever the input's order
    decoded = tensors.from_proto(message)
    assert decoded.dtype.isnative
    assert_same(decoded, native)


def test_wire_bytes_are_little_endian_row_major():
    array = np.array([[1, 2], [3, 4]], dtype=">u2").T  # big-endian and column-major
    assert tensors.to_proto("x", array).data == bytes([1, 0, 3, 0, 2, 0, 4, 0])


@pytest.mark.parametrize(
    "shape, data",
    [((2, 3), bytes(23)), ((2, 3), bytes(25)), ((), b""), ((0, 3), bytes(4)), ((5,), bytes(0))],
    ids=["one_short", "one_long", "empty_scalar", "data_for_zero_size", "missing"],
)
def test_byte_count_must_match_shape(shape, data):
    message = pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=list(shape), data=data)
    with pytest.raises(TensorFormatError, match="bytes, expected"):
        tensors.from_proto(message)


def test_huge_shape_does_not_wrap_around():
    # 2**32 * 2**32 elements wraps to 0 in int64: it must still be refused as a format error, not crash reshape.
    message = pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[2**32, 2**32], data=b"")
    with pytest.raises(TensorFormatError):
        tensors.from_proto(message)


def test_negative_dimension():
    with pytest.raises(TensorFormatError, match="negative"):
        tensors.from_proto(pb.Tensor(name="x", dtype=pb.DATA_TYPE_INT8, shape=[-1], data=b""))


@pytest.mark.parametrize("code", [pb.DATA_TYPE_UNSPECIFIED, 99])
def test_unknown_dtype_code(code):
    with pytest.raises(TensorFormatError, match="unsupported data type"):
        tensors.from_proto(pb.Tensor(name="x", dtype=code, shape=[1], data=b"\0"))
    with pytest.raises(TensorFormatError):
        tensors.numpy_dtype(code)


@pytest.mark.parametrize("dtype", [np.complex64, np.dtype("U3"), np.dtype("S3"), object, np.longdouble, "string"])
def test_unsupported_numpy_dtypes(dtype):
    with pytest.raises(TensorFormatError):
        tensors.dtype_code(dtype)
    if dtype != "string":
        with pytest.raises(TensorFormatError):
            tensors.to_proto("x", np.zeros(2, dtype=dtype))


def test_dtype_tables_agree():
    assert sorted(tensors.DTYPE_NAMES) == sorted(v for v in pb.DataType.values() if v != pb.DATA_TYPE_UNSPECIFIED)
    for name in ALL_DTYPES:
        code = tensors.NAME_TO_CODE[name]
        assert tensors.dtype_code(name) == code == tensors.dtype_code(np_dtype(name))
        assert tensors.dtype_name(code) == tensors.dtype_name(np_dtype(name)) == name
        assert tensors.numpy_dtype(code) == np_dtype(name)


def test_duplicate_names_in_a_set():
    twice = pb.TensorSet(tensors=[tensors.to_proto("a", np.zeros(1)), tensors.to_proto("a", np.ones(1))])
    with pytest.raises(TensorFormatError, match="given twice"):
        tensors.set_from_proto(twice)


def test_set_keeps_order_and_values():
    arrays = {name: sample(name, (2, 2), seed=i) for i, name in enumerate(reversed(ALL_DTYPES))}
    message = tensors.set_to_proto(arrays)
    assert [t.name for t in message.tensors] == list(arrays)
    decoded = tensors.set_from_proto(pb.TensorSet.FromString(message.SerializeToString()))
    assert list(decoded) == list(arrays)
    for name in arrays:
        assert_same(decoded[name], arrays[name])


# -- through a real runner ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def identities(ort_runner, model_dir):
    """The Identity-per-dtype model loaded on the onnxruntime backend of a live runner."""
    path = identity_model(model_dir / "identities.onnx")
    answer = ort_runner.client.load(
        pb.LoadRequest(model=pb.ModelSource(path=str(path), format="onnx"), device="cpu", threads=1), TIMEOUT_S)
    assert not answer.failure.category, answer.failure
    return answer


def test_load_reports_every_dtype(identities):
    assert {s.name: tensors.DTYPE_NAMES[s.dtype] for s in identities.inputs} == {f"x_{n}": n for n in ORT_DTYPES}
    assert {s.name: tensors.DTYPE_NAMES[s.dtype] for s in identities.outputs} == {f"y_{n}": n for n in ORT_DTYPES}


@pytest.mark.parametrize("shape", SHAPES, ids=["scalar", "zero_size", "3d"])
def test_onnxruntime_runner_round_trip(ort_runner, identities, shape):
    """All twelve dtypes ONNX Runtime takes from numpy, in one Infer; the inputs are non-contiguous/big-endian."""
    want = {f"x_{name}": sample(name, shape, seed=3) for name in ORT_DTYPES}
    sent = dict(want)
    if len(shape) > 1:
        sent["x_float32"] = np.asfortranarray(want["x_float32"])
        sent["x_int32"] = want["x_int32"].astype(">i4")
    answer = ort_runner.client.infer(identities.model_id, sent, TIMEOUT_S)
    assert not answer.failure.category, answer.failure
    got = tensors.set_from_proto(answer.outputs)
    assert sorted(got) == sorted(f"y_{name}" for name in ORT_DTYPES)
    for name in ORT_DTYPES:
        assert_same(got[f"y_{name}"], want[f"x_{name}"])


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_echo_runner_round_trip(echo_runner, model_dir, name):
    """Every protocol dtype, bfloat16 included, through a runner whose backend returns its inputs."""
    placeholder = model_dir / "echo.bin"
    placeholder.write_bytes(b"echo")
    loaded = echo_runner.client.load(pb.LoadRequest(model=pb.ModelSource(path=str(placeholder)), variant="ok"),
                                     TIMEOUT_S)
    assert loaded.model_id, loaded.failure
    arrays = {f"{name}_{i}": sample(name, shape, seed=i) for i, shape in enumerate(SHAPES)}
    arrays["view"] = sample(name, (4, 6), seed=9)[::2, ::-3]
    answer = echo_runner.client.infer(loaded.model_id, arrays, TIMEOUT_S)
    assert not answer.failure.category, answer.failure
    got = tensors.set_from_proto(answer.outputs)
    assert list(got) == list(arrays)
    for key, want in arrays.items():
        assert_same(got[key], want)
    echo_runner.client.unload(loaded.model_id, TIMEOUT_S)
