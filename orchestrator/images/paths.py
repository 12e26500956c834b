"""Where the image definitions live in a source checkout: images/<backend>/ and the host-side wheelhouses."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO / "images"
WHEELHOUSE = IMAGES_DIR / ".wheelhouse"  # images/.wheelhouse/<backend>/: the wheels an image installs
PROJECT_WHEELS = WHEELHOUSE / "project"  # the project's own wheel, built on the host


def image_dir(backend: str) -> Path:
    return IMAGES_DIR / backend


def dockerfile(backend: str) -> Path:
    return image_dir(backend) / "Dockerfile"


def requirements_file(backend: str) -> Path:
    return image_dir(backend) / "requirements.txt"
