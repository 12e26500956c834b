"""The Docker engine as the image commands see it: the sandboxes' connection (docker_engine.connect), with advice
for `speedster-run images` users, and the facts of a backend's local image."""

from __future__ import annotations

from orchestrator.errors import UserError
from orchestrator.images.names import image_name
from orchestrator.sandboxes import docker_engine

# Builds, pushes and pulls stream for minutes: each API call may take that long.
API_TIMEOUT_S = 600


def client():
    """A docker.DockerClient that answered a ping; a UserError (exit 2) with what to do otherwise."""
    try:
        return docker_engine.connect(timeout_s=API_TIMEOUT_S)
    except docker_engine.EngineUnavailableError as error:
        if error.sdk_missing:
            raise UserError("the docker SDK is not installed: pip install 'speedster-run[docker]'") from None
        raise UserError(f"Docker engine not reachable: start dockerd (or set DOCKER_HOST) ({error.detail})") \
            from None


# The docker Image of a name or id, or None when the engine does not have it: the sandboxes' lookup.
find = docker_engine.find_image


def image_exists(backend: str, tag: str | None = None) -> bool:
    return find(client(), image_name(backend, tag)) is not None


def image_info(backend: str, tag: str | None = None) -> dict:
    """{"name", "id", "repo_digests", "labels", "size", "created", "user"} of a backend's local image.

    Raises UserError when the image does not exist (build it with `speedster-run images build BACKEND`).
    """
    name = image_name(backend, tag)
    image = find(client(), name)
    if image is None:
        raise UserError(f"no image {name}: run `speedster-run images build {backend}`")
    attrs = image.attrs
    return {
        "name": name,
        "id": image.id,
        "repo_digests": list(attrs.get("RepoDigests") or []),
        "labels": dict(image.labels or {}),
        "size": int(attrs.get("Size") or 0),
        "created": attrs.get("Created", ""),
        "user": (attrs.get("Config") or {}).get("User", ""),
    }
