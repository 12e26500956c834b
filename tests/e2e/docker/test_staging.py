"""A model in a directory only its owner can read runs in the docker sandbox unchanged: the runner containers see the
model and its external data (staged into the run's own directory), and nothing else that sits beside it."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from orchestrator.cli import main
from orchestrator.sandboxes.docker import DockerSandbox
from speedster_run.shared import tensors
from speedster_run.shared.files import sha256_file
from speedster_run.runner.v1 import runner_pb2 as pb
from tests.conftest import mlp_onnx
from tests.e2e.docker.conftest import run_containers

pytestmark = pytest.mark.docker

FAST = ["--samples", "2", "--time-budget", "0.3", "--rounds", "1", "--warmup", "1"]
SECRET = "export AWS_SECRET_ACCESS_KEY=do-not-mount-me\n"


@pytest.fixture
def private_model(tmp_path):
    """A model with its external data in a subdirectory, in a 0700 directory (a home, a `mktemp -d`) beside a
    secret; the model file itself 0600 (so it must be copied), the data 0644 (so it can be hard-linked)."""
    import onnx

    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    model = home / "model.onnx"
    onnx.save_model(onnx.load(str(mlp_onnx(tmp_path / "plain.onnx"))), str(model), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="data/weights.bin", size_threshold=0)
    (home / ".bash_history").write_text(SECRET)
    model.chmod(0o600)
    (home / "data" / "weights.bin").chmod(0o644)
    (home / "data").chmod(0o700)
    home.chmod(0o700)
    return model


def modes(directory) -> dict[str, int]:
    return {str(p): p.stat().st_mode for p in [directory, *directory.rglob("*")]}


def test_the_containers_see_the_model_and_its_data_and_nothing_else(docker_engine, runner_images, private_model):
    home = private_model.parent
    before = modes(home)
    files = [private_model, home / "data" / "weights.bin"]
    sandbox = DockerSandbox(mem_limit="1g")
    sandbox.share(home, files)
    runner = sandbox.start("onnxruntime", 1, 120.0)
    try:
        container = docker_engine.containers.get(runner.handle.container.id)
        assert all(m["Source"] not in (str(home), str(home / "data")) for m in container.attrs["Mounts"])
        seen = container.exec_run(["find", str(home)]).output.decode().split()
        assert sorted(seen) == sorted([str(home), str(private_model), str(home / "data"), *map(str, files[1:])])
        assert container.exec_run(["cat", str(home / ".bash_history")]).exit_code != 0
        mounted = [m["Destination"] for m in container.attrs["Mounts"]]
        assert container.exec_run(["find", *mounted, "-name", ".bash_history"]).output.decode().strip() == ""

        # The runner (uid 10001) loads it from where the orchestrator says it is, and runs it.
        client = sandbox.client(runner)
        path = sandbox.runner_path("onnxruntime", str(private_model))
        answer = client.load(pb.LoadRequest(model=pb.ModelSource(path=path, sha256=sha256_file(private_model),
                                                                 format="onnx"),
                                            device="cpu", precision="fp32", variant="default", threads=1), 60)
        assert not answer.failure.category, answer.failure.message
        outputs = client.infer(answer.model_id, {"x": np.ones((1, 256), np.float32)}, 60)
        assert tensors.set_from_proto(outputs.outputs)["y"].shape == (1, 64)
        client.close()

        staged = sandbox._shares[0].source
        assert os.stat(f"{staged}/data/weights.bin").st_ino == (home / "data" / "weights.bin").stat().st_ino  # a link
        assert os.stat(f"{staged}/model.onnx").st_ino != private_model.stat().st_ino  # 0600: a readable copy
        assert stat.S_IMODE(os.stat(f"{staged}/model.onnx").st_mode) == 0o444
    finally:
        sandbox.close()
    assert modes(home) == before  # nothing of the user's changed, not even a permission bit
    assert (home / "data" / "weights.bin").exists() and not os.path.exists(staged)
    assert run_containers(docker_engine, sandbox.run_id) == []


def test_a_run_with_a_model_in_a_private_directory_succeeds(docker_engine, runner_images, private_model, tmp_path,
                                                            capsys):
    before = modes(private_model.parent)
    report_path = tmp_path / "report.json"
    code = main(["--model", str(private_model), "--backends", "onnxruntime,openvino", "--sandbox", "docker",
                 "--report", str(report_path), *FAST])
    assert code == 0, capsys.readouterr().err
    report = json.loads(report_path.read_text())
    assert report["environment"]["runner_sandboxes"] == {"onnxruntime": "docker", "openvino": "docker"}
    assert all(row["status"] == "ok" for row in report["candidates"]), report["candidates"]
    assert modes(private_model.parent) == before


def test_the_python_api_runs_and_saves_a_private_model_in_docker(docker_engine, runner_images, private_model):
    from orchestrator.api.compilers import only
    from speedster import load_model, optimize_model, save_model

    x = np.random.default_rng(0).standard_normal((1, 256), dtype=np.float32)
    optimized = optimize_model(str(private_model), [((x,),)], ignore_compilers=only("openvino"), sandbox="docker",
                               execution="runner", measure_s=0.2, quiet=True)
    assert optimized.execution == "openvino runner (docker sandbox)"
    saved = save_model(optimized, private_model.parent / "optimized")  # into the private directory too
    expected = optimized(x)[0]
    optimized.close()
    loaded = load_model(saved, execution="runner", sandbox="docker")
    assert "docker" in loaded.execution and np.allclose(loaded(x)[0], expected, atol=1e-5)
    loaded.close()
