"""`images list`: every known backend's local image with its size and pinned versions, or its absence."""

from __future__ import annotations

import json

from orchestrator.images.definitions import pins_or_none
from orchestrator.images.engine import client, find
from orchestrator.images.labels import LABEL_VERSIONS
from orchestrator.images.names import image_name, known_backends

# What every image pins for the runner itself: `images list` leaves them out to show what tells the images apart.
CORE_PACKAGES = {"grpcio", "grpcio-health-checking", "protobuf", "ml-dtypes", "tabulate", "onnx"}


def list_images(tag: str | None = None) -> list[dict]:
    """One entry per known backend: its image's facts, or {"backend", "name", "missing": True}."""
    engine = client()
    entries = []
    for backend in known_backends():
        name = image_name(backend, tag)
        image = find(engine, name)
        if image is None:
            entries.append({"backend": backend, "name": name, "missing": True})
            continue
        labels = image.labels or {}
        try:
            versions = json.loads(labels.get(LABEL_VERSIONS, "{}"))
        except ValueError:
            versions = {}
        entries.append({
            "backend": backend, "name": name, "missing": False, "id": image.id,
            "digests": list(image.attrs.get("RepoDigests") or []), "size": int(image.attrs.get("Size") or 0),
            "created": image.attrs.get("Created", ""), "versions": versions,
            "stale": versions != pins_or_none(backend),
        })
    return entries


def human_size(size: int) -> str:
    """Sizes as `docker images` prints them (powers of 1000)."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
