"""Whole runs on the docker sandbox: every backend in its own image, each row pinned to the image it ran in."""

from __future__ import annotations

import pytest

from orchestrator.config import RunConfig, TimingConfig
from orchestrator.run import optimize
from orchestrator.sandboxes.docker import DockerSandbox
from tests.conftest import mlp_onnx
from tests.e2e.docker.conftest import run_containers

pytestmark = pytest.mark.docker

FAST_TIMING = TimingConfig(time_budget_s=0.3, rounds=2, warmup_iterations=2)


@pytest.fixture(scope="module")
def docker_run(docker_engine, runner_images, tmp_path_factory):
    """One run of onnxruntime and openvino, each in its image, fp32 and int8 (the quantizers write beside the model,
    which is on a read-only mount here); returns (report, sandbox, progress lines)."""
    directory = tmp_path_factory.mktemp("docker-run")
    directory.chmod(0o755)
    model = mlp_onnx(directory / "mlp.onnx")
    lines: list[str] = []
    sandbox = DockerSandbox(mem_limit="2g")
    config = RunConfig(model=model, backends=("onnxruntime", "openvino"), sandbox="docker", samples=2,
                       precisions=("fp32", "int8"), timing=FAST_TIMING)
    report = optimize(config, progress=lines.append, sandbox=sandbox)
    return report, sandbox, lines


def test_a_run_in_containers_records_images_and_leaves_none(docker_engine, runner_images, docker_run):
    report, sandbox, lines = docker_run
    rows = {row.name: row for row in report.candidates}
    assert {"onnxruntime/int8-dynamic", "onnxruntime/int8-static", "openvino/int8-nncf"} <= set(rows)
    assert all(row.status == "ok" for row in rows.values()), [(r.name, r.failure) for r in rows.values()]
    # The image has what ONNX Runtime's pre-quantisation pass needs (sympy): int8 is not made from the raw model.
    assert rows["onnxruntime/int8-static"].details["preprocess"] == "done"
    assert report.winner is not None
    for backend in ("onnxruntime", "openvino"):
        row = rows[f"{backend}/fp32"]
        assert row.image == runner_images[backend]
        assert row.image_digest.startswith("sha256:")  # the exact image it ran (containers start from that id)
        assert row.runner_description.startswith("docker container ")
        assert report.environment["runner_sandboxes"][backend] == "docker"
        assert report.environment["docker"]["images"][backend]["digest"] == row.image_digest
        assert any(f"starting the {backend} runner (docker: {runner_images[backend]})" in line for line in lines)
    assert report.environment["sandbox"] == "docker" and report.environment["docker"]["engine"]
    assert run_containers(docker_engine, sandbox.run_id) == [], "containers left behind"


def _numpy_major(client, image: str) -> int:
    output = client.containers.run(image, entrypoint=["/opt/venv/bin/python", "-c",
                                                      "import numpy; print(numpy.__version__)"],
                                   network_mode="none", remove=True)
    return int(output.decode().strip().split(".")[0])


def test_backends_with_clashing_dependencies_both_run(docker_engine, runner_images, docker_run):
    """numpy 2 (onnxruntime's image) and numpy 1 (openvino's) cannot share one environment: one run uses both."""
    report, _, _ = docker_run
    rows = {row.name: row for row in report.candidates}
    assert rows["onnxruntime/fp32"].status == "ok" and rows["openvino/fp32"].status == "ok"
    majors = {backend: _numpy_major(docker_engine, runner_images[backend]) for backend in ("onnxruntime", "openvino")}
    assert majors["onnxruntime"] != majors["openvino"], majors
