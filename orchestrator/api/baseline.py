"""The user's torch module as the run's baseline: called in this process exactly as the user calls it (their module,
eager, inference mode, positional or keyword inputs, on its device), so that every speedup is against what they have
and not against our export of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from orchestrator.api import structure

NAME = "torch/fp32-eager (your module)"


class TorchCaller:
    """A CallerModel (orchestrator.in_process) for a torch.nn.Module or a HuggingFace model."""

    name = NAME

    def __init__(self, model: Any, names: list[str], as_keywords: bool, extra: dict[str, Any], device: str):
        import torch

        self.model = model
        self.names = names
        self.as_keywords = as_keywords
        self.extra = extra  # call options the export also used (use_cache=False for HuggingFace)
        self.device = torch.device(device)
        self.versions = {"torch": torch.__version__}
        self.description = f"this process: your {type(model).__name__}, eager, under torch.inference_mode"

    def prepare(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        from speedster_run.shared.torch_io import to_torch

        return [to_torch(feeds[name], self.device) for name in self.names]

    def call(self, args: list[Any]) -> Any:
        import torch

        with torch.inference_mode():
            result = (self.model(**dict(zip(self.names, args)), **self.extra) if self.as_keywords
                      else self.model(*args, **self.extra))
        if self.device.type == "cuda":  # the clock stops when the GPU is done, as in the runners
            torch.cuda.synchronize(self.device)
        return result

    def outputs(self, result: Any) -> dict[str, np.ndarray]:
        """Named as the exported program names them (output_0, output_1...), leaves in the same order."""
        from speedster_run.shared.torch_io import to_numpy

        leaves, _ = structure.flatten(result)
        return {f"output_{index}": to_numpy(leaf) for index, leaf in enumerate(leaves)}

    @contextlib.contextmanager
    def threads(self, count: int) -> Iterator[None]:
        """torch's intra-op threads set to the run's count while it runs, the caller's own setting restored."""
        import torch

        saved = torch.get_num_threads()
        if count > 0:
            torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(saved)
