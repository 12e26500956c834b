"""Candidate planning: backend x precision x variant for the device, from what each runner describes."""

from __future__ import annotations

import dataclasses

from orchestrator.config import TUNED, RunConfig
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.shared import catalog

# The original model, format -> (backend, precision, variant): the backend and variant the catalog names for its
# format (ONNX Runtime's plain session for an ONNX file, torch eager for a torch artifact), in fp32. Its run on the
# target device is the speedup's baseline; its run on the CPU in fp32 gives the reference outputs.
ORIGINAL = {fmt: (backend, "fp32", catalog.get(backend).original_variant)
            for fmt, backend in catalog.original_formats().items()}
# Cost order when candidates tie within the noise: keep full precision and the original's runtime if you can.
PRECISION_COST = {"fp32": 0, "bf16": 1, "fp16": 1, "int8": 2}


@dataclasses.dataclass(frozen=True)
class Candidate:
    backend: str
    precision: str
    variant: str
    format: str  # the model format it is compiled from
    device: str
    is_original: bool = False
    label: str = ""  # a name of its own, for what is not a backend's candidate (the caller's model)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return f"{self.backend}/{self.precision}" + ("" if self.variant == "default" else f"-{self.variant}")


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A backend or offer that cannot compete, with the reason shown in the report."""

    backend: str
    precision: str
    variant: str
    category: str
    reason: str


def wanted_precisions(config: RunConfig) -> tuple[str, ...]:
    """As in Speedster: reduced precisions only when the user allows an accuracy drop (or asks for them)."""
    if config.precisions is not None:
        return config.precisions
    return ("fp32", "fp16", "bf16", "int8") if config.metric_drop_ths is not None else ("fp32",)


def original_candidate(source_format: str, device: str) -> Candidate:
    """The baseline: the original on the run's device, or on the CPU where its runtime cannot use that device
    (TPU, Neuron): speedups are then against the CPU."""
    backend, precision, variant = ORIGINAL[source_format]
    return Candidate(backend, precision, variant, source_format, device_for(device, ("cpu", "cuda")) or "cpu", True)


ACCELERATOR_KINDS = ("cuda", "gpu")


def device_for(device: str, kinds) -> str | None:
    """The device string a backend understands: "gpu:N" and "cuda:N" both name the N-th accelerator, which a
    backend may call either way (ONNX Runtime and torch say cuda, OpenVINO says gpu). None if it has no such kind."""
    kind, _, index = device.partition(":")
    if kind in kinds:
        return device
    if kind in ACCELERATOR_KINDS:
        other = next((k for k in ACCELERATOR_KINDS if k in kinds), None)
        return f"{other}:{index or 0}" if other else None
    return None


# Untuned TVM on a CPU runs tens of times slower than the other runtimes there (its default pipeline schedules loops
# naively) and its compile and check take a minute: it competes on a CPU only when tuned, or when asked for by name.
UNTUNED_TVM_ON_CPU = ("untuned TVM on CPU is far slower than the other runtimes; --tune-budget SECONDS tunes it, "
                      "--backends tvm forces it")


def run_formats(source_format: str) -> tuple[str, ...]:
    """The model formats a run can hand its runners: the original's, plus ONNX where a torch artifact is exported
    to it (whether the export succeeds is known later; a backend that needs it is started while it runs)."""
    return (source_format,) if source_format == catalog.ONNX else (source_format, catalog.ONNX)


def not_applicable(backend: str, config: RunConfig, formats: tuple[str, ...]) -> str | None:
    """Why the backend cannot help this run, from the catalog alone (nothing started): it cannot serve the run's
    device kind, or compiles none of the run's formats, or it is untuned TVM on a CPU nobody asked for. None where
    it may help, and for a plug-in backend the catalog does not know (its runner's Describe says)."""
    entry = catalog.get(backend)
    if entry is None:
        return None
    kind = config.device.partition(":")[0]
    if device_for(config.device, entry.devices) is None:
        return f"serves {', '.join(entry.devices)} only, not {kind}"
    if not any(fmt in entry.formats for fmt in formats):
        return f"compiles {', '.join(entry.formats)}; this run has {', '.join(formats)}"
    if (backend == "tvm" and kind == "cpu" and config.tune_budget_s is None
            and backend not in (config.backends or ())):
        return UNTUNED_TVM_ON_CPU
    return None


def plan(
    descriptions: dict[str, pb.DescribeResponse], formats: dict[str, str], config: RunConfig
) -> tuple[list[Candidate], list[Skipped]]:
    """Candidates in a stable order (backend, then offer order), and the offers that cannot run with why.

    `formats` maps an available model format to its file (the original plus what export produced).
    """
    precisions = wanted_precisions(config)
    candidates: list[Candidate] = []
    skipped: list[Skipped] = []
    for backend, description in descriptions.items():
        if not description.available:
            skipped.append(Skipped(backend, "", "", "unavailable", description.unavailable_reason))
            continue
        seen = {d.partition(":")[0] for d in description.devices}
        device = device_for(config.device, seen)
        if device is None or (device != "cpu" and device not in description.devices):
            skipped.append(Skipped(backend, "", "", "unavailable",
                                   f"device {config.device} not seen by the runner (it sees {', '.join(description.devices)})"))
            continue
        offered = False
        for offer in description.offers:
            if offer.precision not in precisions or device.partition(":")[0] not in offer.devices:
                continue
            if (backend, None) in config.exclude or (backend, offer.variant) in config.exclude:
                continue
            if offer.variant == TUNED and config.tune_budget_s is None:
                continue  # tuning takes minutes: only when asked (--tune-budget, optimization_time="unconstrained")
            fmt = next((f for f in offer.formats if f in formats), None)
            if fmt is None:
                skipped.append(Skipped(backend, offer.precision, offer.variant, "export",
                                       f"needs a {' or '.join(offer.formats)} model, and none could be made"))
                continue
            offered = True
            candidates.append(Candidate(backend, offer.precision, offer.variant, fmt, device))
        if not offered and not any(s.backend == backend for s in skipped):
            skipped.append(Skipped(backend, "", "", "unavailable",
                                   f"offers nothing for {config.device} at {', '.join(precisions)}"))
    return candidates, skipped
