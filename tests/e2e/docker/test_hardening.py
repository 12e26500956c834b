"""The docker sandbox's containers are hardened as designed, and a killed run's leftovers are removed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from orchestrator.sandboxes.docker import DockerSandbox
from tests.e2e.docker.conftest import run_containers

pytestmark = pytest.mark.docker


def test_a_running_runner_container_is_hardened(docker_engine, runner_images, readable_model):
    sandbox = DockerSandbox(mem_limit="1g", pids_limit=256)
    sandbox.share(readable_model.parent)
    threads = 1
    runner = sandbox.start("onnxruntime", threads, 120.0)
    try:
        container = docker_engine.containers.get(runner.handle.container.id)
        assert container.status == "running"
        config, host = container.attrs["Config"], container.attrs["HostConfig"]
        assert config["User"] == "10001:10001"
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["Memory"] == 2**30 and host["MemorySwap"] == 2**30  # no swap beyond the limit
        assert host["PidsLimit"] == 256
        assert host["CpusetCpus"] == str(sorted(os.sched_getaffinity(0))[0])  # as many cores as threads
        assert not host["Devices"] and not host["DeviceRequests"]  # CPU run: no device at all
        assert host["Tmpfs"]["/tmp"].startswith("rw,exec,nosuid,nodev,size=")
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        model_dir = str(readable_model.parent)
        assert mounts[model_dir]["Source"] == model_dir and mounts[model_dir]["RW"] is False
        assert mounts["/run/speedster"]["RW"] is True
        assert all(not m["RW"] for d, m in mounts.items() if d != "/run/speedster")
        labels = config["Labels"]
        assert labels["io.speedster-run.run"] == sandbox.run_id
        assert labels["io.speedster-run.backend"] == "onnxruntime"
        assert labels["io.speedster-run.owner"] == f"{socket.gethostname()}:{os.getpid()}"
        assert config["Env"].count(f"OMP_NUM_THREADS={threads}") == 1

        assert container.exec_run(["id", "-u"]).output.decode().strip() == "10001"
        assert container.exec_run(["touch", "/escape"]).exit_code != 0  # read-only root
        assert container.exec_run(["touch", f"{model_dir}/escape"]).exit_code != 0  # read-only model
        assert container.exec_run(["touch", "/tmp/scratch"]).exit_code == 0  # the tmpfs
        tmp_mount = next(line for line in container.exec_run(["cat", "/proc/mounts"]).output.decode().splitlines()
                         if line.split()[1] == "/tmp")
        assert {"nosuid", "nodev"} <= set(tmp_mount.split()[3].split(",")) and "noexec" not in tmp_mount  # JIT .so
        assert container.exec_run(["cat", str(readable_model)]).exit_code == 0  # the model is readable

        assert runner.image == runner_images["onnxruntime"] and runner.image_digest.startswith("sha256:")
        assert container.attrs["Image"] == runner.image_digest  # the report pins what actually runs
        assert runner.image in runner.description and container.short_id in runner.description
        command = sandbox.reproduce_command(runner)
        for flag in ("--network none", "--read-only", "--cap-drop ALL", "--security-opt no-new-privileges",
                     "--user 10001:10001", f"-v {model_dir}:{model_dir}:ro", runner.image):
            assert flag in command
    finally:
        sandbox.close()
    assert run_containers(docker_engine, sandbox.run_id) == []


def test_containers_of_a_killed_run_are_removed_by_the_next(docker_engine, runner_images):
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs (the orchestrator of the "killed run")
    labels = {"io.speedster-run.run": "killedrun0001", "io.speedster-run.backend": "onnxruntime",
              "io.speedster-run.owner": f"{socket.gethostname()}:{dead.pid}"}
    alive = dict(labels, **{"io.speedster-run.run": "liverun00001",
                            "io.speedster-run.owner": f"{socket.gethostname()}:{os.getpid()}"})
    options = dict(entrypoint=["sleep", "infinity"], detach=True, network_mode="none", user="10001:10001")
    leftover = docker_engine.containers.run(runner_images["onnxruntime"], labels=labels, **options)
    still_owned = docker_engine.containers.run(runner_images["onnxruntime"], labels=alive, **options)
    try:
        sandbox = DockerSandbox()
        sandbox.engine()
        # Gone (another orchestrator starting at the same time may have been the one that removed it).
        assert run_containers(docker_engine, "killedrun0001") == []
        assert [c.id for c in run_containers(docker_engine, "liverun00001")] == [still_owned.id]  # its owner lives
        sandbox.close()
    finally:
        for container in (leftover, still_owned):
            try:
                container.remove(force=True)
            except Exception:
                pass


@pytest.mark.parametrize("device, requests, devices", [
    ("cuda:1", [{"Driver": "", "Count": 0, "DeviceIDs": ["1"], "Capabilities": [["gpu"]], "Options": {}}], None),
    ("neuron:0", None, [{"PathOnHost": "/dev/neuron0", "PathInContainer": "/dev/neuron0",
                         "CgroupPermissions": "rwm"}]),
])
def test_a_container_gets_the_runs_device_and_no_other(docker_engine, runner_images, tmp_path, device, requests,
                                                       devices):
    """Created, not started: this machine may have neither device."""
    sandbox = DockerSandbox(device)
    spec = sandbox.spec("onnxruntime", 1, tmp_path, [], None)
    container = docker_engine.containers.create(**spec.create_kwargs())
    try:
        host = container.attrs["HostConfig"]
        assert host["DeviceRequests"] == requests
        assert host["Devices"] == devices
        assert ("--gpus device=1" in spec.command_line()) == (device == "cuda:1")
        renamed = "SPEEDSTER_RUN_DEVICE_MAP=cuda:1=cuda:0,gpu:1=gpu:0"  # inside, the one GPU it gets is GPU 0
        assert (renamed in container.attrs["Config"]["Env"]) == (device == "cuda:1")
    finally:
        container.remove(force=True)
        sandbox.close()


def test_a_device_the_engine_cannot_provide_falls_back_to_local_under_auto(docker_engine, runner_images):
    from orchestrator.sandboxes.auto import AutoSandbox

    if shutil.which("nvidia-smi"):
        pytest.skip("this host has an NVIDIA GPU: its engine may well provide it")
    sandbox = AutoSandbox("cuda:0")
    try:
        runner = sandbox.start("onnxruntime", 1, 60.0)
        kind, note = sandbox.placement("onnxruntime")
        assert kind == "local" and "cannot start the onnxruntime runner container" in note
        assert runner.description.startswith("local process")
    finally:
        sandbox.close()
    assert run_containers(docker_engine, sandbox._docker.run_id) == []
