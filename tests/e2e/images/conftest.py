"""Fixtures of the image tests: the engine, the catalog's CPU images (built, or rebuilt as a no-op where CI built
them) and one hardened container per image, serving on a unix socket in a host directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from speedster_run.shared import catalog
from tests.conftest import REPO
from tests.docker_support import docker_engine, missing  # noqa: F401  (docker_engine is a fixture)

SERVING_TIMEOUT_S = 120.0
CPU_BACKENDS = catalog.cpu_image_backends()  # the images CI builds and tests on any x86-64 host


def speedster_run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`speedster-run ARGS` in a child process, as a user types it."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def built_images(docker_engine):
    """backend -> image name of the CPU images, after `speedster-run images build` (all cache where CI built them,
    so the images tested are those of this checkout)."""
    from orchestrator import images

    try:
        docker_engine.images.get(images.LOCAL_BASE)
    except Exception:  # docker.errors.ImageNotFound: it is built with debootstrap, as root
        if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
            missing(f"needs debootstrap to build the base image {images.LOCAL_BASE} (apt-get install debootstrap)")
        if os.geteuid() != 0:
            missing(f"needs root to build the base image {images.LOCAL_BASE} with debootstrap")
    result = speedster_run("images", "build", *CPU_BACKENDS, "--quiet")
    if result.returncode != 0:
        pytest.fail(f"speedster-run images build failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                    f"{result.stderr[-3000:]}", pytrace=False)
    return {backend: images.image_name(backend) for backend in CPU_BACKENDS}


class Runner:
    """A runner container as the docker sandbox starts it, serving on <socket_dir>/runner.sock."""

    def __init__(self, container, socket_dir: Path, serving_s: float):
        self.container = container
        self.socket_dir = socket_dir
        self.serving_s = serving_s

    @property
    def target(self) -> str:
        return f"unix://{self.socket_dir}/runner.sock"


def start_runner(client, image: str, tmpfs: str = "", **options) -> Runner:
    """`docker run --read-only --tmpfs /tmp --network none --cap-drop ALL -v DIR:/run/speedster IMAGE`, then waits
    for SERVING. The health check runs every second (the image's own command; only its interval is overridden)."""
    from orchestrator.runner_client import wait_until_serving

    socket_dir = Path(tempfile.mkdtemp(prefix="sr-img-"))
    socket_dir.chmod(0o777)  # the runner (uid 10001) creates its socket here
    started = time.perf_counter()
    container = client.containers.run(
        image, detach=True, read_only=True, tmpfs={"/tmp": tmpfs}, network_mode="none", cap_drop=["ALL"],
        volumes={str(socket_dir): {"bind": "/run/speedster", "mode": "rw"}},
        healthcheck={"interval": 1_000_000_000, "timeout": 5_000_000_000, "retries": 3}, **options)
    socket = socket_dir / "runner.sock"
    deadline = started + SERVING_TIMEOUT_S
    while not socket.exists() and time.perf_counter() < deadline:
        container.reload()
        if container.status == "exited":
            logs = container.logs().decode(errors="replace")[-2000:]
            container.remove(force=True)
            pytest.fail(f"{image} exited before serving:\n{logs}", pytrace=False)
        time.sleep(0.02)
    serving = wait_until_serving(f"unix://{socket}", max(1.0, deadline - time.perf_counter()))
    serving_s = time.perf_counter() - started
    if not serving:
        logs = container.logs().decode(errors="replace")[-2000:]
        container.remove(force=True)
        pytest.fail(f"{image} did not answer SERVING within {SERVING_TIMEOUT_S:.0f} s:\n{logs}", pytrace=False)
    return Runner(container, socket_dir, serving_s)


def stop_runner(runner: Runner) -> None:
    try:
        runner.container.remove(force=True)
    finally:
        shutil.rmtree(runner.socket_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def runners(docker_engine, built_images):
    """backend -> Runner: one hardened container per CPU image, started one after the other (timed apart)."""
    started: dict[str, Runner] = {}
    try:
        for backend, image in built_images.items():
            started[backend] = start_runner(docker_engine, image)
        yield started
    finally:
        for runner in started.values():
            stop_runner(runner)
