"""The data both sides of the protocol speak of: what a backend offers, what its probe found, a model's tensors,
a load request, and a saved artifact. Plain dataclasses; no library is imported here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Offer:
    """One way a backend can run a model: a precision and a variant, on some device kinds, from some formats."""

    precision: str  # "fp32", "fp16", "bf16", "int8"
    variant: str  # backend-specific: "default", "static", "dynamic", "inductor", ...
    devices: tuple[str, ...]  # device kinds: "cpu", "cuda", "gpu"
    formats: tuple[str, ...]  # model formats: "onnx", "torchscript", "torch_export"
    description: str = ""


@dataclasses.dataclass(frozen=True)
class Availability:
    """What a backend's probe found: library versions and devices, or why it cannot run here."""

    available: bool
    reason: str = ""
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    devices: tuple[str, ...] = ()  # concrete devices: "cpu", "cuda:0", "gpu:0"
    offers: tuple[Offer, ...] = ()


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the backend sees it; None in shape marks a symbolic dimension."""

    name: str
    dtype: str  # numpy-style name: "float32", "int64", "bfloat16", ...
    shape: tuple[int | None, ...]
    dim_names: tuple[str, ...] = ()


@dataclasses.dataclass
class LoadSpec:
    """Everything a backend needs to compile one candidate."""

    model_path: Path  # the main file; external data or weights sit beside it
    format: str
    device: str  # "cpu", "cuda:0", "gpu:0"
    precision: str
    variant: str
    options: dict[str, str]
    threads: int  # 0: the library's default
    calibration: list[dict[str, np.ndarray]]  # sample inputs, for static quantisation
    workdir: Path  # scratch space owned by this model; artifacts are written here


@dataclasses.dataclass(frozen=True)
class Artifact:
    """What `save` wrote: Load(format, file_name, precision, variant, options) rebuilds the model from it."""

    format: str
    file_name: str  # main file, relative to the directory given to save
    precision: str
    variant: str
    options: dict[str, str]
    files: tuple[str, ...]  # every file written, relative to that directory
