"""PyTorch/XLA backend: torch.export programs compiled by XLA through PJRT, on TPUs, or on the CPU.

torch-xla pins its own torch (the image speedster-run/xla has torch 2.9 with torch-xla 2.9), so it lives in its own
image next to the torch image. One process drives one PJRT device type, fixed when the runtime starts: TPU where the
TPU runtime and devices are present, else CPU; PJRT_DEVICE overrides the choice.

Variants: "lazy" traces each call into an XLA graph (LazyTensor; graphs are compiled once per input shape and cached),
"dynamo" is torch.compile(backend="openxla"), which skips the per-call tracing.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import (ARTIFACT_OPTION, Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer,
                                   TensorInfo, device_index)
from speedster_run.shared.errors import CandidateError, first_line

IMAGE = "speedster-run/xla"
NOT_INSTALLED = f"torch_xla is not installed: use the image {IMAGE}"
VARIANTS = ("lazy", "dynamo")
_HALF = {"bf16": "bfloat16"}
# Device nodes of TPU VMs: /dev/accel* (v2-v4), /dev/vfio/* (v5e and later).
TPU_DEVICE_GLOBS = ("/dev/accel*", "/dev/vfio/[0-9]*")


def pjrt_device(environ: dict[str, str], tpu_nodes: list[str], libtpu: bool) -> str:
    """The PJRT device type this process uses: PJRT_DEVICE if set, TPU where its runtime and devices are, else CPU."""
    chosen = environ.get("PJRT_DEVICE", "").strip().upper()
    if chosen:
        return chosen
    return "TPU" if tpu_nodes and libtpu else "CPU"


def runner_devices(pjrt: str, count: int) -> tuple[str, ...]:
    """Device names the runner reports: "cpu" for XLA on the CPU, "tpu:N" per TPU device."""
    if pjrt == "TPU":
        return tuple(f"tpu:{i}" for i in range(count))
    return ("cpu",) if pjrt == "CPU" else ()


def offers_for(pjrt: str) -> tuple[Offer, ...]:
    """fp32 everywhere; bf16 where the hardware computes in it (TPU MXUs)."""
    kind = "tpu" if pjrt == "TPU" else "cpu"
    offers = [Offer("fp32", v, (kind,), ("torch_export",), f"torch-xla {v} on PJRT {pjrt}") for v in VARIANTS]
    if pjrt == "TPU":
        offers += [Offer("bf16", v, ("tpu",), ("torch_export",), f"torch-xla {v}, model cast to bfloat16")
                   for v in VARIANTS]
    return tuple(offers)


def _tpu_nodes() -> list[str]:
    return sorted(path for pattern in TPU_DEVICE_GLOBS for path in glob.glob(pattern))


def _current_pjrt() -> str:
    """The process's PJRT device type, chosen once and written to PJRT_DEVICE, which the runtime reads when it
    starts: the probe and every load agree with it."""
    if not os.environ.get("PJRT_DEVICE"):
        libtpu = importlib.util.find_spec("libtpu") is not None
        os.environ["PJRT_DEVICE"] = pjrt_device({}, _tpu_nodes(), libtpu)
    return os.environ["PJRT_DEVICE"].strip().upper()


class XlaBackend(Backend):
    name = "xla"

    def probe(self) -> Availability:
        """Fast when torch_xla is missing (no import at all); otherwise starts PJRT and counts its devices."""
        if importlib.util.find_spec("torch_xla") is None:
            return Availability(False, NOT_INSTALLED)
        pjrt = _current_pjrt()
        try:
            import torch
            import torch_xla
            import torch_xla.runtime as xr

            count = xr.global_runtime_device_count()
        except Exception as error:  # noqa: BLE001 - a broken install or a runtime that will not start
            return Availability(False, f"torch_xla cannot start PJRT {pjrt}: {first_line(error)[:200]}")
        versions = {"torch_xla": torch_xla.__version__, "torch": torch.__version__, "pjrt_device": pjrt}
        devices = runner_devices(pjrt, count)
        if not devices:
            return Availability(False, f"PJRT {pjrt} is not supported by this backend (cpu, tpu)", versions=versions)
        return Availability(True, versions=versions, devices=devices, offers=offers_for(pjrt))

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        return _build(spec)


def _build(spec: LoadSpec) -> XlaModel:
    import torch
    import torch_xla

    from speedster_run.shared.torch_io import example_arrays, export_specs, load_export

    device = torch_xla.device(device_index(spec.device))
    ep, stored = load_export(spec.model_path, "cpu")
    inputs, outputs = export_specs(ep, stored)
    from torch.export.passes import move_to_device_pass  # not imported by `import torch` in every version

    ep = move_to_device_pass(ep, device)  # also moves constants the graph creates on the CPU
    module = ep.module()
    cast = getattr(torch, _HALF[spec.precision]) if spec.precision in _HALF else None
    if cast is not None:
        module = module.to(cast)
    fn = torch.compile(module, backend="openxla") if spec.variant == "dynamo" else module
    details = {"variant": spec.variant, "precision": spec.precision, "xla_device": str(device),
               "pjrt_device": os.environ.get("PJRT_DEVICE", ""), "torch_xla": torch_xla.__version__,
               "torch": torch.__version__}
    model = XlaModel(fn, device, cast, spec, inputs, outputs, details)
    # XLA compiles on first use: one call here makes load pay for it and surfaces compile errors as "compile".
    example = example_arrays(inputs, spec.calibration)
    model.call({i.name: a for i, a in zip(inputs, example)})
    return model


class XlaModel(LoadedModel):
    def __init__(self, fn: Any, device: Any, cast: Any, spec: LoadSpec, inputs: list[TensorInfo],
                 outputs: list[TensorInfo], details: dict[str, str]):
        self._fn, self._device, self._cast, self._spec = fn, device, cast, spec
        self.inputs, self.outputs, self.details = inputs, outputs, details

    def call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call; copying the results to the host runs the graph and waits for it."""
        import torch

        from speedster_run.shared.torch_io import flatten_outputs, to_numpy, to_torch

        restore = torch.float32 if self._cast is not None else None
        with torch.no_grad():  # XLA tensors do not support inference_mode's inference tensors
            result = self._fn(*[to_torch(feeds[i.name], self._device, self._cast) for i in self.inputs])
            return {name: to_numpy(value, restore) for name, value in flatten_outputs(result)}

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise CandidateError("runtime", f"missing inputs: {', '.join(missing)}")
        return self.call(feeds)

    def save(self, directory: Path) -> Artifact:
        """XLA keeps its compiled graphs in memory: the artifact is the program, recompiled on load."""
        source = Path(self._spec.model_path)
        shutil.copyfile(source, directory / source.name)
        options = {k: v for k, v in self._spec.options.items() if k != ARTIFACT_OPTION}
        return Artifact("torch_export", source.name, self._spec.precision, self._spec.variant, options, (source.name,))
