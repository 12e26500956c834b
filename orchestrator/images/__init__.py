"""Per-backend runner images: names, definitions, build, list, push and pull, through the Docker engine.

Every backend of the catalog (speedster_run.shared.catalog) gets its own image, speedster-run/<backend>:<version>,
with exactly one backend's toolchain in a venv at /opt/venv and the runner as its entry point
(images/<backend>/Dockerfile). Versions are pinned in one place, images/<backend>/requirements.txt, and copied into
the image's labels at build time. Python packages never come from the network inside `docker build` (wheels.py).

One job per module:

    paths        where the definitions and wheelhouses live in a checkout
    contract     what a sandbox needs to run an image (socket, uid, Python)
    names        image names, which backends have an image
    definitions  requirements.txt pins and Dockerfile ARGs
    labels       the labels an image carries
    engine       the Docker client (the sandboxes' docker_engine.connect) and an image's facts
    base_image   the debootstrap'ed base image, for hosts with no registry
    wheels       wheelhouses and the project wheel, built on the host
    building     build contexts and `images build`
    transfer     push and pull through a registry
    listing      `images list`

The names below are those the rest of the project uses.
"""

from orchestrator.images.base_image import LOCAL_BASE, OFFICIAL_BASE, build_base
from orchestrator.images.building import BuildResult, build, build_image
from orchestrator.images.contract import PYTHON_VERSION, RUNNER_UID, RUNNER_USER, SOCKET_DIR, SOCKET_PATH
from orchestrator.images.definitions import canonical, dockerfile_args, read_requirements
from orchestrator.images.engine import client, image_exists, image_info
from orchestrator.images.labels import (LABEL_BACKEND, LABEL_SOURCE, LABEL_VERSION, LABEL_VERSIONS, image_labels,
                                        versions_label)
from orchestrator.images.listing import CORE_PACKAGES, human_size, list_images
from orchestrator.images.names import NAMESPACE, catalog_backends, check_backends, image_name, known_backends, \
    project_version
from orchestrator.images.paths import IMAGES_DIR, PROJECT_WHEELS, REPO, WHEELHOUSE, requirements_file
from orchestrator.images.transfer import pull, push
from orchestrator.images.wheels import build_project_wheel, prepare_wheelhouse

__all__ = [
    "BuildResult", "CORE_PACKAGES", "IMAGES_DIR", "LABEL_BACKEND", "LABEL_SOURCE", "LABEL_VERSION", "LABEL_VERSIONS",
    "LOCAL_BASE", "NAMESPACE", "OFFICIAL_BASE", "PROJECT_WHEELS", "PYTHON_VERSION", "REPO", "RUNNER_UID",
    "RUNNER_USER", "SOCKET_DIR", "SOCKET_PATH", "WHEELHOUSE", "build", "build_base", "build_image",
    "build_project_wheel", "canonical", "catalog_backends", "check_backends", "client", "dockerfile_args",
    "human_size", "image_exists", "image_info", "image_labels", "image_name", "known_backends", "list_images",
    "prepare_wheelhouse", "project_version", "pull", "push", "read_requirements", "requirements_file",
    "versions_label",
]
