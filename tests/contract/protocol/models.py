"""Tiny ONNX models built for the protocol tests (IR version 8: onnx 1.23 writes 14, which ORT 1.31 refuses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8
OPSET = 17

# Every protocol dtype ONNX Runtime's Python API accepts from numpy (it has no numpy bfloat16).
ORT_DTYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "float64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "uint8": TensorProto.UINT8,
    "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32,
    "uint64": TensorProto.UINT64,
    "bool": TensorProto.BOOL,
}


def _save(graph: onnx.GraphProto, path: Path, check: bool = True, **save_kwargs) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    if check:
        onnx.checker.check_model(model)
    onnx.save_model(model, str(path), **save_kwargs)
    return path


def identity_model(path: Path, dtypes: dict[str, int] = ORT_DTYPES) -> Path:
    """One Identity per dtype: input "x_<dtype>" -> output "y_<dtype>", any shape (scalars and zero-size too)."""
    nodes = [helper.make_node("Identity", [f"x_{name}"], [f"y_{name}"]) for name in dtypes]
    inputs = [helper.make_tensor_value_info(f"x_{name}", code, None) for name, code in dtypes.items()]
    outputs = [helper.make_tensor_value_info(f"y_{name}", code, None) for name, code in dtypes.items()]
    # No shape at all (any rank): ORT accepts it, the checker insists on one, so it is skipped here.
    return _save(helper.make_graph(nodes, "identities", inputs, outputs), path, check=False)


def add_one_model(path: Path) -> Path:
    """y = x + 1, x float32[batch, 4]."""
    one = numpy_helper.from_array(np.ones((4,), np.float32), "one")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [one],
    )
    return _save(graph, path)


def string_model(path: Path) -> Path:
    """Identity on a string tensor: ORT runs it, the protocol has no string dtype."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])], "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [2])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, [2])],
    )
    return _save(graph, path)


BIG_IN, BIG_OUT = 1536, 1000  # 1.5 M float32 weights: 6 MiB of external data, several CHUNK_BYTES chunks


def big_weights() -> np.ndarray:
    return np.random.default_rng(1).normal(0, 0.05, (BIG_IN, BIG_OUT)).astype(np.float32)


def external_data_model(directory: Path, main: str = "model.onnx", location: str = "weights.bin") -> Path:
    """y = x @ W + b with W (1.5 M floats) and b in one external data file beside the model."""
    bias = np.linspace(-1, 1, BIG_OUT, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", BIG_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", BIG_OUT])],
        [numpy_helper.from_array(big_weights(), "w"), numpy_helper.from_array(bias, "b")],
    )
    directory.mkdir(parents=True, exist_ok=True)
    return _save(graph, directory / main, save_as_external_data=True, all_tensors_to_one_file=True,
                 location=location, size_threshold=0)
