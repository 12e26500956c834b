"""The model optimize_model returns: called like the original (tensors in, the same output structure out), saved
as a directory, loaded back with load_model.

A saved directory holds the winner's artifact and manifest.json (what `speedster-run --save` writes: backend,
precision, files with sha256, the image that runs it) plus speedster.json (how the original is called: input names,
shapes and dynamic axes, output structure, device). Loading checks both (loader.read_manifest,
saved_meta.read_meta) before the backend opens the artifact; what that runs per format is in the README's "Using a
saved model".
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.api import dynamic, structure
from orchestrator.api.executors import open_executor
from orchestrator.api.saved_meta import API_FILE, API_VERSION, read_meta
from orchestrator.config import DEFAULT_SANDBOX
from orchestrator.loader import SavedModelError, read_manifest



class OptimizedModel:
    """Call it as you called the original: model(x), model(x, y), model(**tokenizer_output), model.forward(...)."""

    def __init__(self, directory: Path, meta: dict, device: str | None = None, threads: int | None = None,
                 execution: str = "auto", sandbox: str = DEFAULT_SANDBOX, keep: Any = None, trust_model: bool = False):
        self.directory = Path(directory)
        self.meta = meta
        self.manifest = read_manifest(self.directory)
        self.device = device or meta["device"]
        self.axes = dynamic.from_json(meta["dynamic_axes"])
        self._executor = open_executor(self.directory, self.manifest, self.device, threads, execution, sandbox,
                                       trust_model)
        self._keep = keep  # a TemporaryDirectory holding `directory` until this model is gone
        self.summary: dict = meta.get("summary", {})
        self.report = None  # the run's RunReport, on the model optimize_model returns (not saved)

    @property
    def backend(self) -> str:
        return self.manifest["backend"]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    @property
    def execution(self) -> str:
        """Where calls run: "in-process", or the backend's runner and its sandbox."""
        return self._executor.where

    @property
    def input_names(self) -> list[str]:
        return list(self.meta["input_names"])

    def __repr__(self) -> str:
        return (f"OptimizedModel({self.backend}/{self.precision}-{self.manifest['variant']} on {self.device}, "
                f"{self.execution})")

    def _feeds(self, args: tuple, kwargs: dict) -> dict[str, np.ndarray]:
        names = self.input_names
        if len(args) > len(names):
            raise TypeError(f"the model takes {len(names)} inputs ({', '.join(names)}); got {len(args)}")
        given = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"the model has no input {key!r}; its inputs: {', '.join(names)}")
            if key in given:
                raise TypeError(f"input {key!r} given twice")
            given[key] = value
        missing = [n for n in names if n not in given]
        if missing:
            raise TypeError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(names)}")
        feeds = {}
        for name in names:
            value = given[name]
            array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            self._check_shape(name, array.shape)
            feeds[name] = array.astype(self.meta["input_dtypes"][name], copy=False)
        return feeds

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        built = self.meta["input_shapes"][name]
        axes = self.axes.get(name, {})
        bad = len(shape) != len(built) or any(
            not (axes[i].min <= size <= axes[i].max) if i in axes else size != built[i] for i, size in enumerate(shape))
        if bad:
            want = "x".join(f"{axes[i].min}..{axes[i].max}" if i in axes else str(d) for i, d in enumerate(built))
            hint = "" if axes else " (the model is static: pass dynamic_info to optimize_model for other shapes)"
            raise ValueError(f"input {name!r} has shape {tuple(shape)}; this optimized model takes {want}{hint}")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        outputs = list(self._executor(self._feeds(args, kwargs)).values())
        if self.meta["framework"] == "torch":
            import torch

            from speedster_run.shared.torch_io import to_torch

            device = torch.device(self.meta["torch_device"])
            outputs = [to_torch(o, device) for o in outputs]
        return structure.unflatten(self.meta["output_structure"], outputs)

    __call__ = forward

    def save(self, path: str | Path) -> Path:
        """Writes the model to a new or empty directory, or replaces a previous save there in one step (a script run
        twice); a directory holding anything else is refused, untouched. load_model(path) brings it back."""
        from orchestrator.api.save_target import holds_exactly_a_save, write_directory

        target = Path(path)
        if target.is_symlink() and not target.exists():
            raise FileExistsError(f"{target}: a symlink to nothing; choose a new directory")
        real = target.resolve() if target.is_symlink() else target  # replace what the link points to, keep the link
        if real.is_dir() and not any(real.iterdir()):
            shutil.copytree(self.directory, real, dirs_exist_ok=True)
        elif not real.exists() or holds_exactly_a_save(real, API_FILE):
            write_directory(self.directory, real)
        else:
            raise FileExistsError(f"{target}: exists and is neither empty nor a previous save (manifest.json, "
                                  f"{API_FILE} and the files its manifest lists, nothing else); choose a new directory")
        return target

    def close(self) -> None:
        """Frees the compiled model (and stops its runner); the object is unusable afterwards."""
        self._executor.close()

    def __del__(self) -> None:
        executor = getattr(self, "_executor", None)
        if executor is not None:
            try:
                executor.close()
            except Exception:
                pass


def write_meta(directory: Path, meta: dict) -> None:
    (directory / API_FILE).write_text(json.dumps({"api_version": API_VERSION, **meta}, indent=1, default=str) + "\n")


def load(path: str | Path, device: str | None = None, execution: str = "auto", sandbox: str = DEFAULT_SANDBOX,
         trust_model: bool = False) -> OptimizedModel:
    directory = Path(path)
    if not directory.is_dir():
        raise SavedModelError(f"{directory}: no such directory (expected one written by save_model)")
    return OptimizedModel(directory, read_meta(directory), device=device, execution=execution, sandbox=sandbox,
                          trust_model=trust_model)
