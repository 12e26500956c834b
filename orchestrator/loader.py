"""Runs a model saved with --save, in this process, through the backend named in its manifest.

    from orchestrator.loader import load_saved
    model = load_saved("optimized/")          # checks every file's sha256, then compiles for the saved device
    outputs = model({"input": array})         # dict of numpy arrays in, dict of numpy arrays out

The manifest is plain JSON: the backend is looked up by name in the registry, nothing in the directory is executed.
The backend's library must be importable here (install speedster-run[onnxruntime], [openvino] or [torch]).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from runners import registry
from runners.backends.base import LoadedModel, LoadSpec
from runners.files import safe_relative, sha256_file


class SavedModelError(Exception):
    """The directory is not a complete, unmodified saved model, or its backend is missing here."""


class SavedModel:
    """A loaded saved model; call it with a dict of numpy arrays keyed by input name."""

    def __init__(self, loaded: LoadedModel, manifest: dict, workdir: tempfile.TemporaryDirectory):
        self.loaded = loaded
        self.manifest = manifest
        self._workdir = workdir

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.loaded.inputs]

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.loaded.run(inputs)

    def close(self) -> None:
        self.loaded.close()
        self._workdir.cleanup()


def read_manifest(directory: Path) -> dict:
    """The manifest, after checking that every file it lists is present and unchanged."""
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SavedModelError(f"{path}: not a readable manifest ({error})") from None
    for name, digest in manifest.get("files", {}).items():
        file_path = directory / safe_relative(name)
        if not file_path.is_file():
            raise SavedModelError(f"{directory}: file {name} listed in the manifest is missing")
        if sha256_file(file_path) != digest:
            raise SavedModelError(f"{directory}: file {name} differs from what was saved (sha256 mismatch)")
    return manifest


def load_saved(directory: str | Path, device: str | None = None, threads: int | None = None) -> SavedModel:
    """Loads a saved model for its saved device (or `device`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        backend = registry.load_backend(manifest["backend"])
        availability = backend.probe()
    except (registry.RegistryError, KeyError) as error:
        raise SavedModelError(f"{directory}: backend not usable here: {error}") from None
    if not availability.available:
        raise SavedModelError(f"{directory}: backend {manifest['backend']} is unavailable: {availability.reason}")
    workdir = tempfile.TemporaryDirectory(prefix="speedster-run-saved-")
    spec = LoadSpec(
        model_path=directory / safe_relative(manifest["file_name"]),
        format=manifest["format"],
        device=device or manifest.get("device", "cpu"),
        precision=manifest["precision"],
        variant=manifest["variant"],
        options=dict(manifest.get("options", {})),
        threads=manifest.get("threads", 0) if threads is None else threads,
        calibration=[],
        workdir=Path(workdir.name),
    )
    return SavedModel(backend.load(spec), manifest, workdir)
