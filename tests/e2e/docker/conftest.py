"""Fixtures of the Docker tests: the engine, the runner images, readable models and fake-backend sandboxes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import FAKE_BACKEND, REPO, mlp_onnx
from tests.docker_support import docker_engine, require_images  # noqa: F401  (docker_engine is a fixture)


@pytest.fixture(scope="session")
def runner_images(docker_engine):
    """The onnxruntime and openvino images (the fake backend runs in the onnxruntime one)."""
    return require_images(docker_engine, "onnxruntime", "openvino")


@pytest.fixture
def readable_model(tmp_path: Path) -> Path:
    """A tiny ONNX model in a directory the containers' user (uid 10001) can read, as a user's usually is."""
    tmp_path.chmod(0o755)
    return mlp_onnx(tmp_path / "mlp.onnx")


def run_containers(client, run_id: str, **labels: str) -> list:
    """Containers (any state) of one run, optionally narrowed by more labels (backend="fake")."""
    wanted = [f"io.speedster-run.run={run_id}"] + [f"io.speedster-run.{k}={v}" for k, v in labels.items()]
    return client.containers.list(all=True, filters={"label": wanted})


def fake_sandbox(runner_images: dict[str, str], **options):
    """A DockerSandbox that runs the test-only fake backend inside the onnxruntime image: the repository's tests/
    mounted read-only and importable, its variants taken from this process's SPEEDSTER_FAKE_VARIANTS."""
    from orchestrator.sandboxes.docker import DockerSandbox

    env = {"SPEEDSTER_RUN_BACKENDS": FAKE_BACKEND, "PYTHONPATH": str(REPO),
           "SPEEDSTER_FAKE_VARIANTS": os.environ.get("SPEEDSTER_FAKE_VARIANTS", "ok")}
    return DockerSandbox(images={"fake": runner_images["onnxruntime"]}, env=env, mounts=[REPO / "tests"], **options)
