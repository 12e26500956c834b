"""Image names and which backends have an image.

speedster-run/<backend>:<tag> locally, <registry>/speedster-run-<backend>:<tag> in a registry (one path component
per image, which every registry accepts), tag defaulting to the project's version. The backends are the catalog's;
an images/<name>/Dockerfile beyond it (a plug-in's image) is known too.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from orchestrator.errors import UserError
from orchestrator.images.paths import IMAGES_DIR
from speedster_run.shared import catalog

NAMESPACE = "speedster-run"


def project_version() -> str:
    try:
        return metadata.version("speedster-run")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def image_name(backend: str, tag: str | None = None, registry: str | None = None) -> str:
    """speedster-run/<backend>:<tag> locally, <registry>/speedster-run-<backend>:<tag> in a registry.

    The tag defaults to the project's version, so an orchestrator finds the images built from its own sources.
    """
    tag = tag or project_version()
    if registry:
        return f"{registry.rstrip('/')}/{NAMESPACE}-{backend}:{tag}"
    return f"{NAMESPACE}/{backend}:{tag}"


def catalog_backends() -> tuple[str, ...]:
    """The catalog's backends, those whose images CI builds (CPU images) first: the order images are listed in."""
    cpu = catalog.cpu_image_backends()
    return cpu + tuple(name for name in catalog.names() if name not in cpu)


def known_backends() -> list[str]:
    """Backends with an image definition (images/<backend>/Dockerfile), the CPU ones first."""
    ordered = catalog_backends()
    if not IMAGES_DIR.is_dir():  # an installed package has no images/ directory: names only
        return list(ordered)
    found = {p.parent.name for p in IMAGES_DIR.glob("*/Dockerfile") if p.parent.name != "base"}
    return [b for b in ordered if b in found] + sorted(found - set(ordered))


def check_backends(backends: Iterable[str]) -> list[str]:
    known = known_backends()
    wanted = list(dict.fromkeys(backends))
    unknown = [b for b in wanted if b not in known]
    if unknown:
        raise UserError(f"no image definition for backend {', '.join(map(repr, unknown))}; "
                        f"images exist for: {', '.join(known)}")
    return wanted
