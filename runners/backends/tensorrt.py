"""TensorRT backend: ONNX models built into TensorRT engines on NVIDIA GPUs (fp32, fp16, int8 by explicit Q/DQ
quantisation), and torch.export programs compiled by Torch-TensorRT.

Its parts, each in its own module:
- tensorrt_options: the load options and optimisation profiles (pure, shared by both compilers);
- tensorrt_onnx: precision plans and the ONNX passes before parsing (onnx/onnxruntime, no TensorRT);
- tensorrt_engine: ONNX -> engine, and running it on a CUDA stream (TensorRT, cuda-python);
- tensorrt_torch: Torch-TensorRT (torch_tensorrt.dynamo);
- tensorrt_cuda: the CUDA runtime calls the backend makes itself.
The parts that need no GPU are tested on machines without TensorRT.
"""

from __future__ import annotations

from runners.backends.base import Availability, Backend, LoadedModel, LoadSpec, Offer
from runners.backends.tensorrt_engine import ENGINE_FORMAT, load_engine
from runners.backends.tensorrt_options import parse_options
from runners.backends.tensorrt_torch import load_torch_tensorrt, torch_tensorrt_version

IMAGE = "speedster-run/tensorrt"
NOT_INSTALLED = f"TensorRT is not installed (GPU only: use the image {IMAGE} on a CUDA host)"
NO_DEVICE = "no CUDA device"
TORCH_VARIANT = "torch"  # the variant compiled by Torch-TensorRT; every other variant builds an engine from ONNX


def offers(torch_tensorrt: bool) -> tuple[Offer, ...]:
    """Engines from ONNX at three precisions; Torch-TensorRT's two where it is installed."""
    engine = (
        Offer("fp32", "default", ("cuda",), ("onnx",), "TensorRT engine, fp32 (TF32 off)"),
        Offer("fp16", "default", ("cuda",), ("onnx",), "TensorRT engine with fp16 kernels, fp32 I/O"),
        Offer("int8", "qdq", ("cuda",), ("onnx",), "explicit int8: Q/DQ nodes (calibrated if absent), strongly typed"),
    )
    if not torch_tensorrt:
        return engine
    return engine + tuple(Offer(p, TORCH_VARIANT, ("cuda",), ("torch_export",), f"Torch-TensorRT (dynamo), {p}")
                          for p in ("fp32", "fp16"))


def _cuda_device_count() -> tuple[int, str]:
    """(GPUs, "") or (0, why not)."""
    from runners.backends.tensorrt_cuda import device_count, import_cudart

    try:
        cudart = import_cudart()
    except ImportError as error:
        return 0, f"cuda-python is not installed ({error}); use the image {IMAGE}"
    count = device_count(cudart)
    return (count, "") if count else (0, NO_DEVICE)


class TensorRtBackend(Backend):
    """NVIDIA TensorRT: engines built from ONNX; Torch-TensorRT for torch.export programs where it is installed."""

    name = "tensorrt"
    artifact_formats = (ENGINE_FORMAT,)  # a saved Torch-TensorRT program stays torch_export

    def probe(self) -> Availability:
        """Fast when TensorRT is missing (one failed import); otherwise versions, CUDA devices and offers."""
        try:
            import tensorrt as trt
        except (ImportError, OSError):
            return Availability(False, NOT_INSTALLED)
        count, why = _cuda_device_count()
        if not count:
            return Availability(False, why, versions={"tensorrt": trt.__version__})
        versions = {"tensorrt": trt.__version__}
        torch_trt = torch_tensorrt_version()
        if torch_trt:
            versions["torch_tensorrt"] = torch_trt
        return Availability(True, versions=versions, devices=tuple(f"cuda:{i}" for i in range(count)),
                            offers=offers(bool(torch_trt)))

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        """Builds (or, for an artifact, deserialises) an engine; Torch-TensorRT for the "torch" variant."""
        options = parse_options(spec.options)
        if spec.variant == TORCH_VARIANT:
            return load_torch_tensorrt(spec, options)
        return load_engine(spec, options)
