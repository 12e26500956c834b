"""AWS Neuron backend: torch models compiled by neuronx-cc through torch-neuronx, for Inferentia2 and Trainium.

torch_neuronx.trace compiles a module for fixed input shapes into a TorchScript module that runs on one NeuronCore
group. A runner container gets one device, /dev/neuronN, from the sandbox (its device "neuron:N"), and the probe
reports the device nodes it sees under the same names. Precisions other than fp32 are the compiler's auto-cast of matrix
multiplications (--auto-cast matmult --auto-cast-type bf16|fp16): inputs and outputs stay fp32.
"""

from __future__ import annotations

import glob
import importlib.util
import re
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import (Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer, TensorInfo,
                                   reloads_artifact)
from speedster_run.shared.errors import CandidateError, first_line

IMAGE = "speedster-run/neuron"
NOT_INSTALLED = (f"torch-neuronx is not installed (AWS Inferentia2/Trainium only: use the image {IMAGE} on an inf2 "
                 "or trn1 instance)")
NO_DEVICE = "no AWS Neuron device (/dev/neuron* is absent: pass one in, docker run --device /dev/neuron0)"
FORMATS = ("torch_export", "torchscript")
SAVED_NAME = "model.neuron.pt"
AUTO_CAST = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}
OFFERS = tuple(Offer(p, "default", ("neuron",), FORMATS, f"torch_neuronx.trace, neuronx-cc auto-cast {AUTO_CAST[p]}")
               for p in AUTO_CAST)


def neuron_devices(nodes: list[str]) -> tuple[str, ...]:
    """"/dev/neuron3" -> "neuron:3", in index order; other names are ignored."""
    indexes = sorted(int(m.group(1)) for m in (re.fullmatch(r".*/neuron(\d+)", n) for n in nodes) if m)
    return tuple(f"neuron:{i}" for i in indexes)


def compiler_args(precision: str, options: dict[str, str]) -> list[str]:
    """neuronx-cc arguments: auto-cast for the precision, the optimisation level, then the user's own arguments."""
    if precision not in AUTO_CAST:
        raise CandidateError("unavailable", f"neuron has no {precision} mode")
    args = ["--auto-cast", "none"] if precision == "fp32" else ["--auto-cast", "matmult", "--auto-cast-type",
                                                                 AUTO_CAST[precision]]
    level = options.get("optlevel", "2")
    if level not in ("1", "2", "3"):
        raise CandidateError("compile", f"optlevel must be 1, 2 or 3, got {level!r}")
    args.append(f"--optlevel={level}")
    return args + options.get("compiler_args", "").split()


class NeuronBackend(Backend):
    name = "neuron"

    def probe(self) -> Availability:
        """Fast when torch-neuronx is missing (no import at all) or no device node exists."""
        if importlib.util.find_spec("torch_neuronx") is None:
            return Availability(False, NOT_INSTALLED)
        devices = neuron_devices(glob.glob("/dev/neuron*"))
        if not devices:
            return Availability(False, NO_DEVICE)
        try:
            import torch
            import torch_neuronx
        except Exception as error:  # noqa: BLE001 - a broken install: say so instead of failing the runner
            return Availability(False, f"torch-neuronx does not import: {first_line(error)[:200]}")
        versions = {"torch_neuronx": getattr(torch_neuronx, "__version__", "unknown"), "torch": torch.__version__}
        return Availability(True, versions=versions, devices=devices, offers=OFFERS)

    def load_impl(self, spec: LoadSpec) -> LoadedModel:
        return _build(spec, compiler_args(spec.precision, spec.options))


def _source(spec: LoadSpec) -> tuple[Any, list[TensorInfo], list[TensorInfo] | None]:
    """The module to trace and its input (and, when known, output) specs."""
    from speedster_run.shared.torch_io import plain_module
    from speedster_run.shared.torch_io import export_specs, load_export, load_torchscript, torchscript_input_names

    if spec.format == "torch_export":
        ep, stored = load_export(spec.model_path, "cpu")
        inputs, outputs = export_specs(ep, stored)
        return plain_module(ep), inputs, outputs  # traceable: without the exported module's guard hook
    module, stored, outputs = load_torchscript(spec.model_path, "cpu")
    names = torchscript_input_names(module)
    if not stored or len(stored) != len(names):
        raise CandidateError("compile", f"{spec.model_path.name} stores no input specs; neuron needs them to trace")
    return module, stored, outputs


def _build(spec: LoadSpec, args: list[str]) -> NeuronModel:
    import torch_neuronx

    from speedster_run.shared.torch_io import example_arrays, load_torchscript, outputs_from_run, to_torch

    details = {"compiler_args": " ".join(args), "torch_neuronx": getattr(torch_neuronx, "__version__", "unknown")}
    if reloads_artifact(spec):  # a module this backend traced: torch_neuronx's import loads its ops
        traced, inputs, outputs = load_torchscript(spec.model_path, "cpu")
        details["source"] = "artifact"
    else:
        module, inputs, outputs = _source(spec)
        example = tuple(to_torch(a, "cpu") for a in example_arrays(inputs, spec.calibration))
        spec.workdir.mkdir(parents=True, exist_ok=True)
        traced = torch_neuronx.trace(module, example, compiler_args=args,
                                     compiler_workdir=str(spec.workdir / "neuronx-cc"))
        if spec.options.get("dynamic_batch") == "true":  # one compiled batch size, split and padded at run time
            traced = torch_neuronx.dynamic_batch(traced)
            details["dynamic_batch"] = "true"
        details["source"] = "model"
        details["traced_shapes"] = ";".join(str(list(t.shape)) for t in example)
    model = NeuronModel(traced, spec, inputs, outputs or [], details)
    if not model.outputs:
        arrays = example_arrays(inputs, spec.calibration)
        results = model.run({i.name: a for i, a in zip(inputs, arrays)})
        model.outputs = outputs_from_run(list(results.items()), inputs, arrays)
    return model


class NeuronModel(LoadedModel):
    def __init__(self, traced: Any, spec: LoadSpec, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 details: dict[str, str]):
        self._traced, self._spec = traced, spec
        self.inputs, self.outputs, self.details = inputs, outputs, details

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A traced Neuron module returns when its results are on the host."""
        import torch

        from speedster_run.shared.torch_io import flatten_outputs, to_numpy, to_torch

        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise CandidateError("runtime", f"missing inputs: {', '.join(missing)}")
        with torch.no_grad():
            result = self._traced(*[to_torch(feeds[i.name], "cpu") for i in self.inputs])
        return {name: to_numpy(value) for name, value in flatten_outputs(result)}

    def save(self, directory: Path) -> Artifact:
        """The traced module (the NEFF inside) with the I/O specs; loading needs torch_neuronx and a Neuron device."""
        import torch

        from speedster_run.shared.torch_io import INPUTS_FILE, OUTPUTS_FILE, specs_to_json

        extra = {INPUTS_FILE: specs_to_json(self.inputs), OUTPUTS_FILE: specs_to_json(self.outputs)}
        torch.jit.save(self._traced, str(directory / SAVED_NAME), _extra_files=extra)
        return Artifact("torchscript", SAVED_NAME, self._spec.precision, self._spec.variant, {"artifact": "true"},
                        (SAVED_NAME,))
