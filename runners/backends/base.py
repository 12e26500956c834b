"""The contract every backend fills in: describe itself, compile a model, run it, save what it compiled.

A backend module imports its library inside the methods below, never at import time, so that the registry can list a
backend whose library is missing as "unavailable" instead of crashing.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import ClassVar

import numpy as np

from runners.errors import CandidateError


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


class LoadedModel(abc.ABC):
    """A compiled model, ready to run. `run` returns only when results are ready (GPU work synchronised)."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    details: dict[str, str]  # what was actually done: providers, hints, quantisation mode...

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference; feeds are keyed and typed as in `inputs`; outputs keyed as in `outputs`."""

    @abc.abstractmethod
    def save(self, directory: Path) -> Artifact:
        """Writes a self-contained artifact into `directory` (exists, empty)."""

    def export(self, directory: Path, fmt: str, example: dict[str, np.ndarray]) -> Artifact:
        """Writes the loaded model converted to another format (SaveArtifact's `format`) into `directory`, traced
        with `example`; backends that convert override it."""
        raise CandidateError("unavailable", f"this backend does not export models to {fmt}")

    def close(self) -> None:
        """Releases the library's resources; the default relies on garbage collection."""


class Backend(abc.ABC):
    """One compiler/runtime. Subclasses set `name` and implement `probe` and `load`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def probe(self) -> Availability:
        """Imports the library and reports versions, devices and offers, or why it is unavailable."""

    @abc.abstractmethod
    def load(self, spec: LoadSpec) -> LoadedModel:
        """Compiles spec.model_path for the device and precision. Raises CandidateError for a failed candidate."""


def device_kind(device: str) -> str:
    """"cuda:1" -> "cuda"."""
    return device.split(":", 1)[0]


def device_index(device: str) -> int:
    """"cuda:1" -> 1, "cpu" -> 0."""
    _, _, index = device.partition(":")
    return int(index) if index else 0


__all__ = [
    "Artifact",
    "Availability",
    "Backend",
    "CandidateError",
    "LoadSpec",
    "LoadedModel",
    "Offer",
    "TensorInfo",
    "device_index",
    "device_kind",
]
