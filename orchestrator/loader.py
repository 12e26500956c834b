"""Runs a model saved with --save, in this process, through the backend named in its manifest.

    from orchestrator.loader import load_saved
    model = load_saved("optimized/")          # checks every file's sha256, then compiles for the saved device
    outputs = model({"input": array})         # dict of numpy arrays in, dict of numpy arrays out

The manifest is plain JSON, checked key by key: the backend is looked up by name in the registry, every file it names
must be one of its sha256-checked files, inside the directory (no symlink out). The artifact is then loaded by the
backend, as the README's "Using a saved model" says per format (a torch file through speedster_run/shared/
export_archive.py's checks). The backend's library must be importable here (speedster-run[onnxruntime], [openvino]
or [torch]).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import numpy as np

from orchestrator.errors import UserError
from orchestrator.model_source import external_files
from runners import registry
from speedster_run.shared.torch_io import TRUST_OPTION
from speedster_run.shared.errors import CandidateError, InvalidRequestError
from speedster_run.shared.files import safe_relative, sha256_file
from speedster_run.shared.types import LoadSpec

MANIFEST = "manifest.json"  # as orchestrator/artifacts.py writes it


class SavedModelError(Exception):
    """The directory is not a well-formed, complete, unmodified saved model, or its backend cannot load it here."""


class SavedModel:
    """A loaded saved model; call it with a dict of numpy arrays keyed by input name."""

    def __init__(self, loaded: registry.LoadedModel, manifest: dict, workdir: tempfile.TemporaryDirectory):
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


def saved_file(directory: Path, name: object) -> Path:
    """directory/name for a file of the saved directory: a relative name that stays inside it, symlinks resolved."""
    try:
        relative = safe_relative(name) if isinstance(name, str) else None
    except InvalidRequestError:
        relative = None
    if relative is None:
        raise SavedModelError(f"{directory}: file name {name!r} in the manifest must be relative and stay inside the "
                              "directory")
    path = directory / relative
    root = directory.resolve()
    if root not in path.resolve().parents:
        raise SavedModelError(f"{directory}: {name} is a symlink (or under one) that leads outside the directory")
    return path


def saved_json(directory: Path, name: str, what: str) -> dict:
    """The JSON object in a file of the saved directory; SavedModelError naming `what` it should be otherwise."""
    path = saved_file(directory, name)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SavedModelError(f"{path}: not a readable {what} ({error})") from None
    if not isinstance(value, dict):
        raise SavedModelError(f"{path}: not a {what} (a JSON object), but a {type(value).__name__}")
    return value


# Key -> (type, required): what loading reads. Anything else in the manifest is information, never used to load.
_MANIFEST_KEYS = {"backend": (str, True), "format": (str, True), "file_name": (str, True), "precision": (str, True),
                  "variant": (str, True), "files": (dict, True), "options": (dict, False), "device": (str, False),
                  "threads": (int, False), "image": (str, False)}


def read_manifest(directory: Path) -> dict:
    """The manifest, once it is well formed and every file it lists is inside the directory, present and unchanged;
    SavedModelError (one line) otherwise."""
    directory = Path(directory)
    path = saved_file(directory, MANIFEST)
    manifest = saved_json(directory, MANIFEST, "manifest")
    for key, (kind, required) in _MANIFEST_KEYS.items():
        if key not in manifest:
            if required:
                raise SavedModelError(f"{path}: the manifest has no {key!r}")
        elif not isinstance(manifest[key], kind) or isinstance(manifest[key], bool):
            raise SavedModelError(f"{path}: {key!r} is a {type(manifest[key]).__name__}, expected a {kind.__name__}")
    files, options = manifest["files"], manifest.get("options", {})
    if not files or not all(isinstance(d, str) and re.fullmatch(r"[0-9a-f]{64}", d) for d in files.values()):
        raise SavedModelError(f"{path}: 'files' must map each file name to its sha256 (64 hex digits)")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise SavedModelError(f"{path}: 'options' must map names to strings")
    if TRUST_OPTION in options:
        raise SavedModelError(f"{path}: option {TRUST_OPTION!r} is not accepted from a saved manifest")
    if manifest.get("threads", 0) < 0:
        raise SavedModelError(f"{path}: 'threads' must be 0 or more")
    if manifest["file_name"] not in files:
        raise SavedModelError(f"{path}: file_name {manifest['file_name']!r} is not among the sha256-checked 'files'")
    for name, digest in files.items():
        file_path = saved_file(directory, name)
        if not file_path.is_file():
            raise SavedModelError(f"{directory}: file {name} listed in the manifest is missing")
        if sha256_file(file_path) != digest:
            raise SavedModelError(f"{directory}: file {name} differs from what was saved (sha256 mismatch)")
    if manifest["format"] == "onnx":  # the runtime reads external data by the location the model names
        try:
            unlisted = set(external_files(saved_file(directory, manifest["file_name"]))) - set(files)
        except UserError as error:
            raise SavedModelError(str(error)) from None
        if unlisted:
            raise SavedModelError(f"{directory}: external data {', '.join(sorted(unlisted))} of "
                                  f"{manifest['file_name']} is not among the sha256-checked 'files'")
    return manifest


def load_saved(directory: str | Path, device: str | None = None, threads: int | None = None) -> SavedModel:
    """Loads a saved model for its saved device (or `device`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    try:
        backend = registry.load_backend(manifest["backend"])
        availability = backend.probe()
    except registry.RegistryError as error:
        raise SavedModelError(f"{directory}: backend not usable here: {error}") from None
    if not availability.available:
        raise SavedModelError(f"{directory}: backend {manifest['backend']} is unavailable: {availability.reason}")
    workdir = tempfile.TemporaryDirectory(prefix="speedster-run-saved-")
    spec = LoadSpec(
        model_path=saved_file(directory, manifest["file_name"]),
        format=manifest["format"],
        device=device or manifest.get("device", "cpu"),
        precision=manifest["precision"],
        variant=manifest["variant"],
        options=dict(manifest.get("options", {})),
        threads=manifest.get("threads", 0) if threads is None else threads,
        calibration=[],
        workdir=Path(workdir.name),
    )
    try:
        return SavedModel(backend.load(spec), manifest, workdir)
    except CandidateError as error:  # a refused torch file, an artifact the backend cannot read...
        workdir.cleanup()
        raise SavedModelError(f"{directory}: {manifest['backend']} could not load {manifest['file_name']}: "
                              f"{error.message}") from None
