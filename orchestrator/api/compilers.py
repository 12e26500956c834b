"""Speedster's compiler and compressor names, mapped onto speedster-run's backends and their variants."""

from __future__ import annotations

from collections.abc import Iterable

# Every compiler name Speedster accepted (its documented list and its ModelCompiler enum) -> (backend, variant or None
# for all of the backend's candidates). A name whose compiler speedster-run does not ship maps to nothing: ignoring it
# is accepted and changes nothing.
COMPILERS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "onnxruntime": (("onnxruntime", None),),
    "openvino": (("openvino", None), ("onnxruntime-openvino", None)),
    # TVM here compiles from ONNX (the torch.export program only when there is no ONNX export): Speedster's ONNX
    # pipeline. Its torch pipeline (torch_tvm) has no counterpart.
    "tvm": (("tvm", None),),
    "onnx_tvm": (("tvm", None),),
    "torch_tvm": (),
    "tensor_rt": (("tensorrt", None), ("onnxruntime", "tensorrt")),
    "onnx_tensor_rt": (("tensorrt", "default"), ("onnxruntime", "tensorrt")),
    "torch_tensor_rt": (("tensorrt", "torch"),),
    "torchscript": (("torch", "torchscript"), ("torch", "dynamic")),  # TorchScript and its int8 (torch.ao)
    "torch_dynamo": (("torch", "inductor"),),
    "xla": (("xla", None),),  # Speedster's TensorFlow XLA; here XLA is torch-xla, the xla backend
    "torch_xla": (("xla", None),),
    "torch_neuron": (("neuron", None),),
    "iree": (("iree", None),),  # not one of Speedster's: speedster-run's own addition
    "deepsparse": (),
    "tflite": (),
    "bladedisc": (),
    "intel_neural_compressor": (),
    "faster_transformer": (),
}
# Compressors (pruning) change the weights; speedster-run keeps the user's weights, so these never run.
COMPRESSORS = ("sparseml", "intel_pruning")


def _check(names: Iterable[str], valid: Iterable[str], argument: str) -> list[str]:
    names = [names] if isinstance(names, str) else list(names or ())
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"{argument}: unknown name {unknown[0]!r}; valid names: {', '.join(valid)}")
    return names


def excluded(ignore_compilers: Iterable[str] | None, ignore_compressors: Iterable[str] | None = None
             ) -> tuple[tuple[str, str | None], ...]:
    """(backend, variant or None) pairs to leave out; ValueError naming the valid names for an unknown one."""
    _check(ignore_compressors, COMPRESSORS, "ignore_compressors")
    names = _check(ignore_compilers, COMPILERS, "ignore_compilers")
    return tuple(pair for name in names for pair in COMPILERS[name])


def only(*names: str) -> list[str]:
    """ignore_compilers that leaves just these compilers in (tests and users who want one backend)."""
    return [name for name in COMPILERS if name not in names]
