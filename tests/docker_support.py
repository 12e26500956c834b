"""What the Docker tests need: an engine and images. Without them they skip, naming what is missing; with
SPEEDSTER_RUN_REQUIRE_DOCKER=1 (CI) a missing engine or image is a failure instead, so a green CI means they ran."""

from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "SPEEDSTER_RUN_REQUIRE_DOCKER"


def docker_required() -> bool:
    return os.environ.get(REQUIRE_ENV) == "1"


def missing(reason: str) -> None:
    """Skips the test, or fails it where Docker is required."""
    if docker_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine():
    """A docker SDK client of an engine that answers."""
    try:
        import docker
    except ImportError:
        missing("needs a Docker engine (and the docker SDK: pip install 'speedster-run[docker]')")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception:  # DockerException, connection errors: no engine here
        missing("needs a Docker engine")
    yield client
    client.close()


def require_images(client, *backends: str) -> dict[str, str]:
    """backend -> image name for images that exist; skips (or fails) naming the first one missing."""
    import docker

    from orchestrator.images import image_name

    names = {backend: image_name(backend) for backend in backends}
    for backend, name in names.items():
        try:
            client.images.get(name)
        except docker.errors.ImageNotFound:
            missing(f"needs the image {name} (speedster-run images build {backend})")
    return names
