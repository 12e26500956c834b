"""--save DIR: the winner's compiled artifact plus manifest.json, plain data that nothing executes on load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.images import image_name
from orchestrator.output_paths import check_creatable
from orchestrator.pool import CallFailure
from orchestrator.report import RunReport
from speedster_run.shared.files import safe_relative

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


def check_save_dir(path: Path) -> None:
    """Refuses, before the run starts, a target that would overwrite the user's files or that cannot be written."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"--save {path}: exists and is not an empty directory; choose a new directory")
    check_creatable(path, "--save")


def write_chunks(chunks, target: Path) -> dict[str, str]:
    """Writes a FetchArtifact stream into target as it arrives; returns each file's sha256."""
    digests: dict[str, hashlib._Hash] = {}
    handle = None
    try:
        for chunk in chunks:
            if chunk.file_name not in digests:
                if handle is not None:
                    handle.close()
                path = target / safe_relative(chunk.file_name)
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(path, "wb")
                digests[chunk.file_name] = hashlib.sha256()
            handle.write(chunk.data)
            digests[chunk.file_name].update(chunk.data)
            if chunk.last and chunk.sha256 and chunk.sha256 != digests[chunk.file_name].hexdigest():
                raise CallFailure("runtime", f"artifact file {chunk.file_name} arrived corrupted (sha256 mismatch)")
    finally:
        if handle is not None:
            handle.close()
    return {name: digest.hexdigest() for name, digest in digests.items()}


def save_winner(run, report: RunReport) -> Path:
    """Asks the winner's runner to save its artifact, streams the files into --save DIR and writes the manifest."""
    config = run.config
    slot = next(s for s in run.slots if s.result.name == report.winner)
    driver = run.driver
    if not driver.ensure_loaded(slot):
        raise CallFailure("runtime", f"could not reload {slot.result.name} to save it")
    deadline_s = config.call_timeout_s(slot.candidate.backend)
    answer = driver.pool.call(slot.candidate.backend, lambda c: c.save_artifact(slot.model_id, deadline_s))
    if answer.HasField("failure") and answer.failure.category:
        raise CallFailure("runtime", f"saving {slot.result.name} failed: {answer.failure.message}")
    target = config.save_dir
    target.mkdir(parents=True, exist_ok=True)
    digests = driver.pool.call(slot.candidate.backend,
                               lambda c: write_chunks(c.fetch_artifact(slot.model_id, deadline_s), target))
    manifest = answer.manifest
    result = slot.result
    data = {
        "manifest_version": MANIFEST_VERSION,
        "backend": manifest.backend,
        "format": manifest.format,
        "file_name": manifest.file_name,
        "precision": manifest.precision,
        "variant": manifest.variant,
        "options": dict(manifest.options),
        "files": digests,
        "device": slot.candidate.device,
        "threads": config.effective_threads,
        "inputs": [vars(i) for i in run.source.inputs],
        "outputs": [vars(o) for o in run.source.outputs],
        "source": {"path": str(run.source.path), "sha256": run.source.sha256, "format": run.source.format},
        "backend_versions": result.versions,
        # The image that runs it where the backend's library is not installed (load_model goes through a runner).
        "image": result.image or image_name(manifest.backend),
        "image_digest": result.image_digest,
        "measured": {
            "median_ms": result.stats.median_ms if result.stats else None,
            "speedup": result.speedup,
            "drop": result.comparison.drop if result.comparison else None,
        },
    }
    (target / MANIFEST).write_text(json.dumps(data, indent=1, default=str) + "\n")
    return target
