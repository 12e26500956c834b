"""Reading an image's definition: the pins of images/<backend>/requirements.txt and the Dockerfile's ARG defaults."""

from __future__ import annotations

import re

from orchestrator.errors import UserError
from orchestrator.images.paths import dockerfile, requirements_file


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: ml_dtypes -> ml-dtypes."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(backend: str) -> dict[str, str]:
    """The pins of images/<backend>/requirements.txt: {canonical name: version}; every line must be name==version."""
    pins: dict[str, str] = {}
    path = requirements_file(backend)
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # comments and pip options (--extra-index-url ...)
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if not match:
            raise UserError(f"{path}:{number}: expected name==version (every version of an image is pinned), "
                            f"got {line!r}")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def pins_or_none(backend: str) -> dict[str, str] | None:
    """The pins, or None where the requirements file is missing or malformed (an image listed, not built here)."""
    try:
        return read_requirements(backend)
    except (OSError, UserError):
        return None


def dockerfile_args(backend: str) -> dict[str, str]:
    """The Dockerfile's ARG defaults (BASE_IMAGE, vendor index URLs...)."""
    args: dict[str, str] = {}
    for line in dockerfile(backend).read_text().splitlines():
        match = re.match(r"\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)", line)
        if match:
            args.setdefault(match.group(1), match.group(2).strip("\"'"))
    return args
