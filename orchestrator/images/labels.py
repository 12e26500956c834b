"""The labels every image carries: its backend, its pinned versions, the project's version and where its sources
live. `images list` compares the versions label with the requirements file to tell a stale image."""

from __future__ import annotations

import json
import subprocess
from importlib import metadata

from orchestrator.images.definitions import read_requirements
from orchestrator.images.names import project_version
from orchestrator.images.paths import REPO

LABEL_BACKEND = "io.speedster-run.backend"
LABEL_VERSIONS = "io.speedster-run.versions"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_SOURCE = "org.opencontainers.image.source"


def versions_label(backend: str) -> str:
    return json.dumps(read_requirements(backend), sort_keys=True, separators=(",", ":"))


def source_url() -> str:
    """Where the sources live, for org.opencontainers.image.source: the package's Source URL or the git remote."""
    try:
        for entry in metadata.metadata("speedster-run").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() in ("source", "repository", "homepage"):
                return url.strip()
    except metadata.PackageNotFoundError:
        pass
    try:
        remote = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True,
                                text=True, timeout=10)
        if remote.returncode == 0 and remote.stdout.strip():
            return remote.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "https://pypi.org/project/speedster-run/"


def image_labels(backend: str) -> dict[str, str]:
    return {
        LABEL_BACKEND: backend,
        LABEL_VERSIONS: versions_label(backend),
        LABEL_VERSION: project_version(),
        LABEL_SOURCE: source_url(),
    }
