"""Torch-TensorRT: torch.export programs compiled by torch_tensorrt.dynamo, run and saved like the torch backend's.

torch and torch_tensorrt are imported inside the functions, as in every backend module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from runners.backends.base import ARTIFACT_OPTION, Artifact, LoadedModel, LoadSpec, TensorInfo
from runners.backends.tensorrt_options import Shape, TrtOptions, build_profiles
from speedster_run.shared.errors import CandidateError

TORCH_SAVED = "model.trt.pt2"


def torch_tensorrt_version() -> str:
    """Torch-TensorRT's version where it imports and a CUDA device is present, else "" (then it is not offered)."""
    try:
        import torch
        import torch_tensorrt
    except Exception:  # noqa: BLE001 - absent, or broken against this torch: then it is simply not offered
        return ""
    return torch_tensorrt.__version__ if torch.cuda.is_available() else ""


def load_torch_tensorrt(spec: LoadSpec, options: TrtOptions) -> LoadedModel:
    """Compiles an ExportedProgram with torch_tensorrt.dynamo (or reloads a saved one) and runs it like torch."""
    import torch
    import torch_tensorrt

    from speedster_run.shared.torch_io import example_arrays, export_specs, load_export, to_torch

    ep, stored = load_export(spec.model_path, spec.device)
    inputs, outputs = export_specs(ep, stored)
    if options.artifact:  # torch_tensorrt's import registered the ops the saved program calls
        module = ep.module()
        details = {"source": "artifact"}
    else:
        profiles = build_profiles(inputs, options, spec.calibration)
        examples = example_arrays(inputs, spec.calibration)
        arg_inputs = [_torch_trt_input(torch_tensorrt, torch, info, array, profiles.get(info.name), spec.device)
                      for info, array in zip(inputs, examples)]
        precisions = {torch.float32} | ({torch.float16} if spec.precision == "fp16" else set())
        module = torch_tensorrt.dynamo.compile(ep, arg_inputs=arg_inputs, enabled_precisions=precisions,
                                               device=torch.device(spec.device))
        details = {"source": "model", "enabled_precisions": ",".join(sorted(str(p) for p in precisions))}
        details["example_shapes"] = json.dumps([list(a.shape) for a in examples])
        module.example = [to_torch(a, spec.device) for a in examples]
    details.update({"torch_tensorrt": torch_tensorrt.__version__, "torch": torch.__version__})
    return TorchTrtModel(module, spec, inputs, outputs, details)


def _torch_trt_input(torch_tensorrt: Any, torch: Any, info: TensorInfo, example: np.ndarray,
                     profile: tuple[Shape, Shape, Shape] | None, device: str) -> Any:
    """A torch_tensorrt.Input: a range where the dim is symbolic, else the example itself."""
    from speedster_run.shared.torch_io import to_torch

    if profile is None:
        return to_torch(example, device)
    low, opt, high = profile
    return torch_tensorrt.Input(min_shape=low, opt_shape=opt, max_shape=high, dtype=getattr(torch, info.dtype))


class TorchTrtModel(LoadedModel):
    """A Torch-TensorRT compiled module, called like the torch backend calls an exported module."""

    def __init__(self, module: Any, spec: LoadSpec, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 details: dict[str, str]):
        self._module, self._spec = module, spec
        self.inputs, self.outputs, self.details = inputs, outputs, details

    def run_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from speedster_run.shared.torch_io import flatten_outputs, to_numpy, to_torch

        missing = [i.name for i in self.inputs if i.name not in feeds]
        if missing:
            raise CandidateError("runtime", f"missing inputs: {', '.join(missing)}")
        with torch.inference_mode():
            result = self._module(*[to_torch(feeds[i.name], self._spec.device) for i in self.inputs])
            outputs = {name: to_numpy(value) for name, value in flatten_outputs(result)}
        torch.cuda.synchronize(self._spec.device)
        return outputs

    def save(self, directory: Path) -> Artifact:
        """torch_tensorrt.save as an ExportedProgram: reloading needs torch_tensorrt imported, nothing rebuilt."""
        import torch_tensorrt

        example = getattr(self._module, "example", None)
        torch_tensorrt.save(self._module, str(directory / TORCH_SAVED), output_format="exported_program",
                            arg_inputs=example)
        return Artifact("torch_export", TORCH_SAVED, self._spec.precision, self._spec.variant,
                        {ARTIFACT_OPTION: "true"}, (TORCH_SAVED,))
