"""The Docker engine as the sandboxes see it: connect (lazily importing the SDK), find images, clean up leftovers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from orchestrator.sandboxes.base import SandboxError

LABEL_RUN = "io.speedster-run.run"
LABEL_BACKEND = "io.speedster-run.backend"
LABEL_OWNER = "io.speedster-run.owner"  # "<hostname>:<orchestrator pid>"
LABEL_OWNER_STARTED = "io.speedster-run.owner-started"  # the owner's start time in clock ticks: tells pid reuse


class EngineUnavailableError(SandboxError):
    """No Docker engine answers (or the SDK is missing)."""

    category = "unavailable"

    def __init__(self, message: str, sdk_missing: bool = False, detail: str = ""):
        super().__init__(message)
        # For callers that give their own advice (`speedster-run images` has no --sandbox to suggest).
        self.sdk_missing = sdk_missing
        self.detail = detail  # the SDK's own first line: which socket, which error


class MissingImageError(SandboxError):
    """A backend's image is not in the engine."""

    category = "unavailable"


class ContainerStartError(SandboxError):
    """The engine would not create or start a container (a device it cannot provide, a bad option): nothing ran."""


def connect(timeout_s: float = 60.0):
    """A docker.DockerClient of the engine that DOCKER_HOST (or the default socket) names, once it answers ping.

    The one way the project reaches the engine: the sandboxes and `speedster-run images` both come here.
    `timeout_s` bounds each API call (image builds and pushes need minutes)."""
    try:
        import docker
    except ImportError:
        raise EngineUnavailableError("the Docker SDK is not installed: pip install 'speedster-run[docker]' "
                                     "or use --sandbox local", sdk_missing=True) from None
    try:
        client = docker.from_env(timeout=timeout_s)
        client.ping()
    except Exception as error:  # DockerException, requests' ConnectionError...: all mean "no engine here"
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        where = f" (DOCKER_HOST={os.environ['DOCKER_HOST']})" if os.environ.get("DOCKER_HOST") else ""
        raise EngineUnavailableError(f"Docker engine not reachable: start dockerd or use --sandbox local{where}",
                                     detail=detail) from None
    return client


def default_image(backend: str) -> str:
    """The image `speedster-run images build BACKEND` makes."""
    from orchestrator.images import image_name

    return image_name(backend)


def find_image(client, reference: str):
    """The docker Image for a reference, or None when the engine does not have it."""
    import docker

    try:
        return client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as error:
        raise EngineUnavailableError(f"Docker engine error while looking up {reference}: {error}") from None


def image_digest(image) -> str:
    """The image's content-addressed id ("sha256:..."): identical bits, identical id, tag or no tag."""
    return image.id


def process_started(pid: int) -> str:
    """A process's start time (clock ticks since boot), "" when it cannot be read; with the pid it names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_labels() -> dict[str, str]:
    pid = os.getpid()
    return {LABEL_OWNER: f"{socket.gethostname()}:{pid}", LABEL_OWNER_STARTED: process_started(pid)}


def _owner_alive(owner: str, started: str) -> bool:
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's orchestrator (a shared engine): not ours to judge
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    return not started or process_started(pid) in ("", started)


def remove_leftovers(client) -> list[str]:
    """Removes the containers of runs whose orchestrator died without cleaning up (SIGKILL, power cut): those
    labelled with this host and a process that no longer exists. Returns their names."""
    import docker

    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL_RUN}):
        labels = container.labels or {}
        if _owner_alive(labels.get(LABEL_OWNER, ""), labels.get(LABEL_OWNER_STARTED, "")):
            continue
        try:
            container.remove(force=True)
            removed.append(container.name)
        except docker.errors.APIError:
            pass  # being removed by someone else already
    return removed


def remove_run(client, run_id: str) -> None:
    """Removes every container of one run, whatever its state."""
    import docker

    for container in client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={run_id}"}):
        try:
            container.remove(force=True)
        except docker.errors.APIError:
            pass
