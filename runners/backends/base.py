"""The contract every backend fills in: describe itself, compile a model, run it, save what it compiled.

A backend module imports its library inside the methods below, never at import time, so that the registry can list a
backend whose library is missing as "unavailable" instead of crashing.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

import numpy as np

from speedster_run.shared.devices import device_index, device_kind
from speedster_run.shared.errors import CandidateError
from speedster_run.shared.types import Artifact, Availability, LoadSpec, Offer, TensorInfo


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
