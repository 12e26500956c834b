"""Images through a registry: push tags the local image with its registry name first; pull tags the pulled image
with its local name after, so that the sandboxes find it as if it had been built here."""

from __future__ import annotations

from orchestrator.errors import UserError
from orchestrator.images.engine import client, find
from orchestrator.images.names import image_name
from orchestrator.images.progress import Progress, print_progress


def _stream_errors(chunks, what: str) -> None:
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
            raise UserError(f"{what} failed: {' '.join(str(message).split())[:300]}")


def push(backend: str, registry: str, tag: str | None = None, progress: Progress = print_progress) -> str:
    """Tags speedster-run/<backend>:<tag> as <registry>/speedster-run-<backend>:<tag> and pushes it."""
    import docker

    engine = client()
    local, remote = image_name(backend, tag), image_name(backend, tag, registry)
    image = find(engine, local)
    if image is None:
        raise UserError(f"no image {local} to push: run `speedster-run images build {backend}` first")
    repository, _, remote_tag = remote.rpartition(":")
    image.tag(repository, remote_tag)
    progress(f"{backend}: pushing {remote} ...")
    try:
        _stream_errors(engine.api.push(repository, tag=remote_tag, stream=True, decode=True), f"push of {remote}")
    except docker.errors.APIError as error:
        raise UserError(f"push of {remote} failed: {error.explanation or error}") from None
    return remote


def pull(backend: str, registry: str, tag: str | None = None, progress: Progress = print_progress) -> str:
    """Pulls <registry>/speedster-run-<backend>:<tag> and tags it speedster-run/<backend>:<tag>, the local name."""
    import docker

    engine = client()
    local, remote = image_name(backend, tag), image_name(backend, tag, registry)
    repository, _, remote_tag = remote.rpartition(":")
    progress(f"{backend}: pulling {remote} ...")
    try:
        _stream_errors(engine.api.pull(repository, tag=remote_tag, stream=True, decode=True), f"pull of {remote}")
        image = engine.images.get(remote)
    except (docker.errors.APIError, docker.errors.ImageNotFound) as error:
        explanation = getattr(error, "explanation", None) or str(error)
        raise UserError(f"pull of {remote} failed: {' '.join(str(explanation).split())[:300]}") from None
    local_repository, _, local_tag = local.rpartition(":")
    image.tag(local_repository, local_tag)
    return local
