"""The ONNX side of a TensorRT build, without TensorRT: precision plans and the ONNX passes before parsing.

int8: TensorRT 10.1 deprecated implicit quantisation (IInt8EntropyCalibrator2 and friends) in favour of explicit
quantisation, and TensorRT 11 removed it along with the precision flags. So int8 here is always explicit: a model that
already has QuantizeLinear/DequantizeLinear nodes is built as it is; otherwise Q/DQ nodes are inserted on the
calibration samples (ONNX Runtime's QDQ quantiser, symmetric int8 as TensorRT requires), and the network is built
strongly typed, without precision flags, as TensorRT's documentation recommends for Q/DQ models.

onnx and onnxruntime are imported inside the functions, as in every backend module.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import LoadSpec, TensorInfo
from runners.backends.tensorrt_options import TrtOptions
from speedster_run.shared.errors import CandidateError

_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """How one precision is built: the ONNX pass before parsing, the network's typing, the builder flags."""

    onnx_pass: str  # "none", "fp16" (weights and compute to float16, fp32 I/O), "qdq" (insert Q/DQ nodes)
    strongly_typed: bool  # the ONNX graph's types decide every layer's precision
    set_flags: tuple[str, ...]  # BuilderFlag names
    clear_flags: tuple[str, ...]  # BuilderFlag names, cleared where this TensorRT still has them

    def describe(self) -> str:
        typing = "strongly typed" if self.strongly_typed else "weakly typed"
        flags = "+".join(self.set_flags) or "no precision flags"
        return f"{typing}, {flags}, ONNX pass: {self.onnx_pass}"


def precision_plan(precision: str, trt_major: int, has_qdq: bool) -> PrecisionPlan:
    """The build recipe for a precision on a TensorRT major version.

    fp32 clears TF32, which TensorRT enables by default on Ampere and newer: the candidate says fp32, so it computes
    in fp32. fp16 on TensorRT 10 is the FP16 flag (TensorRT picks fp16 kernels where faster, I/O stays fp32); TensorRT
    11 removed the flag, so there the model is converted to float16 first and built strongly typed. int8 is explicit
    quantisation, always strongly typed and without flags.
    """
    if precision == "int8":
        return PrecisionPlan("none" if has_qdq else "qdq", True, (), ())
    if precision == "fp16":
        if trt_major >= 11:
            return PrecisionPlan("fp16", True, (), ())
        return PrecisionPlan("none", False, ("FP16",), ())
    if precision == "fp32":
        return PrecisionPlan("none", trt_major >= 11, (), ("TF32",))
    raise CandidateError("unavailable", f"tensorrt has no {precision} mode")


def onnx_tensor_infos(model_path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Graph inputs (initializers excluded) and outputs, symbolic dims as None with their names."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def info(value: Any) -> TensorInfo:
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        dims = list(tensor.shape.dim)
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
        return TensorInfo(value.name, dtype, shape, tuple(d.dim_param for d in dims))

    inputs = [info(v) for v in graph.input if v.name not in initializers]
    return inputs, [info(v) for v in graph.output]


def has_qdq(model_path: Path) -> bool:
    """Whether the model is quantised already (QAT exports, ModelOpt output): then it is built as it is."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return any(node.op_type in _QDQ_OPS for node in graph.node)


def convert_fp16(source: Path, target: Path) -> Path:
    """Weights and compute in float16, inputs and outputs kept float32 (for strongly typed builds)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save_model(model, str(target))
    return target


def insert_qdq(source: Path, target: Path, calibration: list[dict[str, np.ndarray]], method: str) -> Path:
    """Q/DQ int8 model calibrated on the samples, in the form TensorRT's explicit quantisation takes.

    TensorRT's quantisation is symmetric, signed int8 with zero points of 0, for activations and weights alike, and
    biases stay floating point (TensorRT fuses them; it has no int32 DequantizeLinear for them). Per-channel weight
    scales keep convolution accuracy. The quantiser runs on ONNX Runtime's CPU provider.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise CandidateError("compile", "int8 needs calibration samples to place Q/DQ scales (or a model that has "
                                        "QuantizeLinear/DequantizeLinear nodes already)")
    methods = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    quantize_static(str(source), str(target), _samples_reader(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=methods[method],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    return target


def _samples_reader(samples: list[dict[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(samples)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._samples, None)

    return _Reader()


def prepare_onnx(spec: LoadSpec, plan: PrecisionPlan, options: TrtOptions) -> tuple[Path, str]:
    """The ONNX file the parser reads, after the plan's pass, and what was done to it."""
    source = Path(spec.model_path)
    if plan.onnx_pass == "none":
        return source, "as given" if spec.precision != "int8" else "Q/DQ nodes of the model"
    spec.workdir.mkdir(parents=True, exist_ok=True)
    target = spec.workdir / f"{source.stem}.{plan.onnx_pass}.onnx"
    target.unlink(missing_ok=True)
    if plan.onnx_pass == "fp16":
        return convert_fp16(source, target), "converted to float16 (fp32 inputs/outputs)"
    insert_qdq(source, target, spec.calibration, options.calibration_method)
    return target, (f"Q/DQ inserted: symmetric int8, per-channel weights, {options.calibration_method} over "
                    f"{len(spec.calibration)} samples")
