"""The contract every backend fills in, and the lifecycle the base runs around it.

A backend says what it offers (`probe`), compiles a model (`load_impl`) and runs it (`LoadedModel.run_impl`). The
base does the rest, the same way for every backend: `load` refuses a request the probe did not offer, calls
`load_impl`, and turns whatever the library raised into a categorised one-line CandidateError ("compile", or "oom"
when memory ran out); `LoadedModel.run` does the same around `run_impl` ("runtime"). A backend raises CandidateError
itself only where it knows better (a bad option, an unsupported operator named, missing calibration samples).

A backend module imports its library inside the methods below, never at import time, so that the registry can list a
backend whose library is missing as "unavailable" instead of crashing.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np

from speedster_run.shared.devices import device_index, device_kind
from speedster_run.shared.errors import CandidateError, as_candidate_error, first_line, one_line
from speedster_run.shared.types import Artifact, Availability, LoadSpec, Offer, TensorInfo

# The load option every saved artifact carries (Artifact.options): the file is this backend's own output.
ARTIFACT_OPTION = "artifact"


class LoadedModel(abc.ABC):
    """A compiled model, ready to run. `run` returns only when results are ready (GPU work synchronised)."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    details: dict[str, str]  # what was actually done: providers, hints, quantisation mode...
    # The informative part of this library's error messages (see speedster_run.shared.errors.one_line).
    error_summary: ClassVar[Callable[[BaseException], str]] = staticmethod(first_line)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference; feeds are keyed and typed as in `inputs`; outputs keyed as in `outputs`. Whatever the
        library raises is a "runtime" CandidateError ("oom" when memory ran out)."""
        try:
            return self.run_impl(feeds)
        except CandidateError:
            raise
        except Exception as error:  # noqa: BLE001 - libraries raise anything; it fails this candidate only
            raise as_candidate_error(error, "runtime", summary=self.error_summary) from error

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The backend's inference, called by `run`."""
        raise NotImplementedError(f"{type(self).__name__} implements neither run_impl nor run")

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
    """One compiler/runtime. Subclasses set `name` and implement `probe` and `load_impl`."""

    name: ClassVar[str]
    # Formats of the artifacts this backend saves that are not model formats it compiles from (a TensorRT engine, an
    # IREE .vmfb): accepted in place of an offer's formats when the request reloads an artifact.
    artifact_formats: ClassVar[tuple[str, ...]] = ()
    # The informative part of this library's error messages (see speedster_run.shared.errors.one_line).
    error_summary: ClassVar[Callable[[BaseException], str]] = staticmethod(first_line)
    _probed: Availability | None = None

    @abc.abstractmethod
    def probe(self) -> Availability:
        """Imports the library and reports versions, devices and offers, or why it is unavailable."""

    def availability(self) -> Availability:
        """The probe's answer, probed once per instance (probes import libraries and open devices); a probe that
        raises makes the backend unavailable, saying why, instead of failing its caller."""
        if self._probed is None:
            try:
                self._probed = self.probe()
            except Exception as error:  # noqa: BLE001 - a broken driver or install: reported, never raised
                self._probed = Availability(available=False, reason=f"probe failed: {one_line(error)}")
        return self._probed

    def load(self, spec: LoadSpec) -> LoadedModel:
        """Compiles spec.model_path for the device and precision: refused as "unavailable" unless the probe offered
        it, then `load_impl`. Raises CandidateError for a failed candidate, whatever went wrong."""
        reason = refusal(self.name, self.availability(), spec, self.artifact_formats)
        if reason:
            raise CandidateError("unavailable", reason)
        try:
            return self.load_impl(spec)
        except CandidateError:
            raise
        except Exception as error:  # noqa: BLE001 - any library failure (MemoryError too) fails only this candidate
            raise as_candidate_error(error, "compile", summary=self.error_summary) from error

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        """The backend's compile, called by `load` once the request is known to be offered."""
        raise NotImplementedError(f"{type(self).__name__} implements neither load_impl nor load")


def reloads_artifact(spec: LoadSpec) -> bool:
    """Whether the request reloads an artifact this backend saved (compiled already: nothing to quantise again)."""
    return spec.options.get(ARTIFACT_OPTION) == "true"


def refusal(name: str, availability: Availability, spec: LoadSpec,
            artifact_formats: tuple[str, ...] = ()) -> str | None:
    """Why backend `name` cannot serve `spec` here, or None when one of its offers matches the device kind, the
    format and the precision/variant. The reasons go from the broadest to the narrowest, so that each names what is
    offered instead."""
    if not availability.available:
        return availability.reason
    offers = availability.offers
    if not offers:
        return f"{name} offers nothing on this host"
    kind = device_kind(spec.device)
    extra = artifact_formats if reloads_artifact(spec) else ()

    def kinds(chosen: Iterable[Offer]) -> list[str]:
        return _unique(k for offer in chosen for k in offer.devices)

    def formats(chosen: Iterable[Offer]) -> list[str]:
        return _unique([*(f for offer in chosen for f in offer.formats), *extra])

    if kind not in kinds(offers):
        return f"{name} does not run on {spec.device!r} here (it runs on {', '.join(kinds(offers))})"
    if spec.format not in formats(offers):
        return f"{name} compiles {' or '.join(formats(offers))} models, not {spec.format!r}"
    mode = f"{spec.precision}/{spec.variant}"
    matching = [offer for offer in offers if (offer.precision, offer.variant) == (spec.precision, spec.variant)]
    if not matching:
        offered = _unique(f"{offer.precision}/{offer.variant}" for offer in offers)
        return f"{name} has no {mode} mode here (it offers {', '.join(offered)})"
    on_device = [offer for offer in matching if kind in offer.devices]
    if not on_device:
        return f"{name} runs {mode} on {' or '.join(kinds(matching))}, not {spec.device!r}"
    if spec.format not in formats(on_device):
        return f"{name} compiles {mode} from {' or '.join(formats(on_device))} models, not {spec.format!r}"
    return None


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


__all__ = [
    "ARTIFACT_OPTION",
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
    "refusal",
    "reloads_artifact",
]
