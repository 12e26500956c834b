"""What a sandbox needs to know to run a runner image (see images/README.md): where the runner listens, as whom,
and the Python of every image's venv. The docker sandbox's container_spec is where the socket and the uid are set;
the image side names them from there so that the two cannot drift apart."""

from __future__ import annotations

from orchestrator.sandboxes.container_spec import RUNNER_UID, SOCKET_DIR, SOCKET_NAME

__all__ = ["PYTHON_VERSION", "RUNNER_UID", "RUNNER_USER", "SOCKET_DIR", "SOCKET_PATH"]

SOCKET_PATH = f"{SOCKET_DIR}/{SOCKET_NAME}"  # mount a host directory at SOCKET_DIR: the runner listens here
RUNNER_USER = f"{RUNNER_UID}:{RUNNER_UID}"
PYTHON_VERSION = "3.11"  # of every image's venv: the wheels downloaded on the host must match it
