"""The per-backend runner images: definitions (no engine needed), then the real images built, labelled, run hardened
(read-only root, tmpfs /tmp, no network, no capability, uid 10001) and serving on a unix socket in a mounted
directory; plus the `speedster-run images` command's own behaviour (no-op rebuilds, list, errors)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from orchestrator import images
from runners import healthcheck
from speedster_run.shared import catalog
from tests.e2e.images.conftest import CPU_BACKENDS, speedster_run, start_runner, stop_runner

# Dependencies of the orchestrator alone (the table, the docker SDK): the runner side never imports them
# (tests/contract/test_layers.py), so no runner image installs them.
ORCHESTRATOR_ONLY = {"tabulate", "docker"}
# What the isolation tests rely on: two images whose numpy cannot share one environment.
NUMPY_MAJOR = {"onnxruntime": "2", "openvino": "1", "torch": "2", "iree": "2", "tvm": "2"}


# --- definitions (no engine) ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", catalog.names())
def test_every_image_pins_every_requirement_and_the_core_deps(backend):
    pins = images.read_requirements(backend)  # raises on any line that is not name==version
    assert {"numpy", "grpcio", "grpcio-health-checking", "protobuf", "onnx", "ml-dtypes"} <= set(pins)
    assert not set(pins) & ORCHESTRATOR_ONLY, "a runner image needs the runner side and the shared layer only"
    major, minor = (int(part) for part in pins["protobuf"].split(".")[:2])
    assert (major, minor) >= (7, 35), "the generated code needs protobuf >= 7.35.1"
    assert json.loads(images.versions_label(backend)) == pins


@pytest.mark.parametrize("backend", catalog.names())
def test_every_dockerfile_follows_the_runner_image_contract(backend):
    text = (images.IMAGES_DIR / backend / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.MULTILINE)
    assert "/opt/venv" in text and "--no-index" in text
    assert f"COPY images/.wheelhouse/{backend}/" in text and "COPY images/.wheelhouse/project/" in text
    # The wheelhouse layer comes before the project's: a code change rebuilds only the last layers.
    assert text.index(f"COPY images/.wheelhouse/{backend}/") < text.index("COPY images/.wheelhouse/project/")
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    for variable in ("HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert variable in text
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "runners.server"]' in text
    assert f'CMD ["--backend", "{backend}", "--listen", "unix:///run/speedster/runner.sock"]' in text
    assert re.search(r'HEALTHCHECK .*\n?.*"runners\.healthcheck"', text)


def test_the_isolation_pair_has_numpy_one_and_two():
    assert images.read_requirements("openvino")["numpy"].startswith("1.")
    assert images.read_requirements("onnxruntime")["numpy"].startswith("2.")


def test_image_names():
    version = images.project_version()
    assert images.image_name("onnxruntime") == f"speedster-run/onnxruntime:{version}"
    assert images.image_name("torch", "dev") == "speedster-run/torch:dev"
    assert images.image_name("openvino", "1.0", "localhost:5000/") == "localhost:5000/speedster-run-openvino:1.0"


def test_healthcheck_finds_the_runners_address():
    assert healthcheck._listen_of(["python", "-m", "runners.server", "--backend", "x", "--listen", "0.0.0.0:1"]) \
        == "0.0.0.0:1"
    tls = ["python", "-m", "runners.server", "--listen", "0.0.0.0:50051", "--health-listen", "127.0.0.1:50050"]
    assert healthcheck._listen_of(tls) == "127.0.0.1:50050"
    assert healthcheck._listen_of(["sleep", "--listen", "x"]) is None
    assert healthcheck.target_for("0.0.0.0:50051") == "127.0.0.1:50051"
    assert healthcheck.target_for("/run/x.sock") == "unix:///run/x.sock"
    assert healthcheck.default_address(Path("/nonexistent")) == healthcheck.DEFAULT_ADDRESS


def test_unknown_backend_is_one_line_and_exit_2():
    result = speedster_run("images", "build", "nosuchbackend", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nosuchbackend" in lines[0] and "onnxruntime" in lines[0], result.stderr


def test_no_engine_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    result = speedster_run("images", "list", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Docker engine not reachable: start dockerd" in lines[0], result.stderr


# --- the images ----------------------------------------------------------------------------------------------------

@pytest.mark.docker
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_image_is_labelled_with_its_pins_and_runs_as_10001(built_images, backend):
    info = images.image_info(backend)
    labels = info["labels"]
    assert labels[images.LABEL_BACKEND] == backend
    assert json.loads(labels[images.LABEL_VERSIONS]) == images.read_requirements(backend)
    assert labels[images.LABEL_VERSION] == images.project_version()
    assert labels[images.LABEL_SOURCE]
    assert info["user"] == "10001:10001"


@pytest.mark.docker
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_hardened_container_serves_its_backend_on_the_mounted_socket(runners, backend):
    from orchestrator.runner_client import RunnerClient

    runner = runners[backend]
    client = RunnerClient(runner.target)
    try:
        answer = client.describe(timeout_s=30)
    finally:
        client.close()
    assert answer.backend == backend
    assert answer.available, answer.unavailable_reason
    assert (runner.socket_dir / "runner.sock").stat().st_uid == images.RUNNER_UID  # the runner's own user made it
    print(f"{backend}: docker run -> SERVING in {runner.serving_s:.2f} s")


@pytest.mark.docker
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_numpy_of_each_image(runners, backend):
    exit_code, output = runners[backend].container.exec_run(
        ["/opt/venv/bin/python", "-c", "import numpy; print(numpy.__version__)"])
    version = output.decode().strip()
    assert exit_code == 0, version
    assert version == images.read_requirements(backend)["numpy"]
    assert version.split(".")[0] == NUMPY_MAJOR[backend]


@pytest.mark.docker
def test_healthcheck_makes_the_containers_healthy(runners):
    deadline = time.monotonic() + 60
    states = {}
    while time.monotonic() < deadline:
        for backend, runner in runners.items():
            runner.container.reload()
            states[backend] = runner.container.attrs["State"].get("Health", {})
        if all(state.get("Status") == "healthy" for state in states.values()):
            break
        time.sleep(0.5)
    for backend, state in states.items():
        assert state.get("Status") == "healthy", (backend, state.get("Log", [])[-1:])
        assert state["Log"][-1]["Output"].strip() == "SERVING unix:///run/speedster/runner.sock"


@pytest.mark.docker
@pytest.mark.parametrize("backend, precision, variant", [
    ("onnxruntime", "int8", "static"),
    ("openvino", "int8", "nncf"),  # NNCF and OpenVINO on numpy 1.x
])
def test_quantised_candidate_runs_in_the_hardened_container(runners, tmp_path, backend, precision, variant):
    outputs = _load_and_run(runners[backend].target, tmp_path, "onnx", precision, variant)
    assert outputs.shape == (4, 64) and np.isfinite(outputs).all()


@pytest.mark.docker
def test_inductor_compiles_in_the_torch_image(docker_engine, built_images, tmp_path):
    """g++ and Python's headers are in the image; /tmp must allow exec (Docker's tmpfs default is noexec), since
    inductor dlopens what it compiles there."""
    runner = start_runner(docker_engine, built_images["torch"], tmpfs="rw,exec,mode=1777")
    try:
        outputs = _load_and_run(runner.target, tmp_path, "torch_export", "fp32", "inductor")
    finally:
        stop_runner(runner)
    assert outputs.shape == (4, 64) and np.isfinite(outputs).all()


def _load_and_run(target: str, directory: Path, fmt: str, precision: str, variant: str) -> np.ndarray:
    """Streams a small model to the runner (as to a runner that shares no filesystem), compiles it and runs it."""
    from orchestrator.runner_client import RunnerClient
    from speedster_run.shared import tensors
    from speedster_run.shared.files import sha256_file
    from speedster_run.runner.v1 import runner_pb2 as pb
    from tests.conftest import mlp_onnx

    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    if fmt == "onnx":
        model = mlp_onnx(directory / "mlp.onnx", batch=4)
    else:
        import torch

        model = directory / "mlp.pt2"
        module = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.ReLU())
        torch.export.save(torch.export.export(module, (torch.from_numpy(x),)), str(model))
    client = RunnerClient(target)
    try:
        upload = client.upload(directory, [model.name], 120)
        name = client.describe().backend
        request = pb.LoadRequest(
            model=pb.ModelSource(upload_id=upload, file_name=model.name, sha256=sha256_file(model), format=fmt),
            device="cpu", precision=precision, variant=variant, threads=1,
            calibration=[tensors.set_to_proto({"x": x})])
        loaded = client.load(request, 300)
        assert not loaded.failure.category, (name, loaded.failure.message)
        answer = client.infer(loaded.model_id, {loaded.inputs[0].name: x}, 120)
        assert not answer.failure.category, (name, answer.failure.message)
    finally:
        client.close()
    (output,) = tensors.set_from_proto(answer.outputs).values()
    return output


# --- the command ---------------------------------------------------------------------------------------------------

@pytest.mark.docker
def test_rebuild_with_nothing_changed_is_all_cache_and_fast(built_images):
    started = time.perf_counter()
    result = speedster_run("images", "build", *CPU_BACKENDS, "--quiet", timeout=600)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for backend in CPU_BACKENDS:
        assert re.search(rf"{backend}: built \S+ \(\w+\) in [\d.]+ s, all layers cached", result.stdout), \
            result.stdout[-3000:]
    assert "wheelhouse up to date" in result.stdout
    assert seconds < 30, f"a no-op rebuild of three images took {seconds:.1f} s"


@pytest.mark.docker
def test_images_list_shows_sizes_and_versions(built_images):
    result = speedster_run("images", "list", timeout=120)
    assert result.returncode == 0, result.stderr
    for backend, image in built_images.items():
        row = next(line for line in result.stdout.splitlines() if line.startswith(backend + " "))
        assert image in row and re.search(r"\d+(\.\d+)? (MB|GB)", row), row
        pins = images.read_requirements(backend)
        assert f"numpy {pins['numpy']}" in row, row
        package = catalog.get(backend).main_package
        assert f"{package} {pins[package]}" in row, row
