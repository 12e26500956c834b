"""The few CUDA runtime calls the TensorRT backend makes itself (devices, streams, buffers), through cuda-python."""

from __future__ import annotations

from typing import Any


def import_cudart() -> Any:
    """cuda-python's runtime module: cuda.bindings.runtime from 12.6 on, cuda.cudart before."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def cuda_call(cudart: Any, result: Any) -> Any:
    """Checks a cuda-python call's (error, *values) result; returns the value(s)."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if error != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(error)[1]
        raise RuntimeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else values


def device_count(cudart: Any) -> int:
    """GPUs the CUDA runtime sees; 0 where it does not start (no driver, no device)."""
    error, count = cudart.cudaGetDeviceCount()
    return count if error == cudart.cudaError_t.cudaSuccess else 0


def device_name(cudart: Any, index: int) -> str:
    """The GPU model's name ("NVIDIA H100 80GB HBM3")."""
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(index))
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00")
