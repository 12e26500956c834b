"""The docker sandbox's pure parts, no engine needed: where shares are mounted, what an exit means, CPU sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.sandboxes.container_spec import cpu_set, device_options, keeps_its_path
from orchestrator.sandboxes.docker import DockerSandbox, describe_state

pytestmark = pytest.mark.docker


@pytest.mark.parametrize("directory, kept", [
    ("/home/me/models", True), ("/tmp/pytest-of-me/x", True), ("/data", True), ("/var/lib/models", True),
    ("/tmp", False), ("/", False), ("/opt", False), ("/run", False), ("/usr/share/models", False),
    ("/etc/models", False), ("/var", False),
])
def test_shares_keep_their_path_unless_it_would_hide_the_images_files(directory, kept):
    assert keeps_its_path(directory) is kept


def test_runner_paths_follow_where_each_share_is_mounted(tmp_path):
    tmp_path.chmod(0o755)
    sandbox = DockerSandbox()
    sandbox.share(tmp_path)
    sandbox.share("/tmp")
    inner = str(tmp_path / "model.onnx")
    assert sandbox.runner_path("onnxruntime", inner) == inner  # the deeper share wins, and keeps its path
    assert sandbox.runner_path("onnxruntime", "/tmp/r50.pt2") == "/speedster-share/1/r50.pt2"
    assert sandbox.runner_path("onnxruntime", "/elsewhere/x") == "/elsewhere/x"


def test_files_of_a_share_are_staged_and_mounted_instead_of_their_directory(tmp_path):
    from orchestrator.errors import UserError

    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "model.onnx").write_bytes(b"model")
    (home / "other.onnx").write_bytes(b"other")
    (home / "notes.txt").write_text("private")
    sandbox = DockerSandbox()
    try:
        sandbox.share(home, [home / "model.onnx"])
        sandbox.share(home, [home / "other.onnx"])  # a second model of the same directory joins the first
        staged = Path(sandbox._shares[0].source)
        assert sorted(p.name for p in staged.iterdir()) == ["model.onnx", "other.onnx"]
        assert sandbox.runner_path("onnxruntime", str(home / "model.onnx")) == str(home / "model.onnx")
        spec = sandbox.spec("onnxruntime", 1, tmp_path, [], None)
        assert (str(staged), str(home), True) in spec.mounts and not any(m[0] == str(home) for m in spec.mounts)
        with pytest.raises(UserError, match="outside the model's directory"):
            sandbox.share(home, [tmp_path / "elsewhere.onnx"])
        with pytest.raises(UserError, match="chmod o\\+rx"):  # a whole directory must be readable: the run's own are
            sandbox.share(home)
    finally:
        sandbox.close()
    assert not staged.exists() and (home / "model.onnx").read_bytes() == b"model"


@pytest.mark.parametrize("state, killed, category, words", [
    ({"Status": "exited", "ExitCode": 137, "OOMKilled": True}, False, "oom", "out of memory (limit 1g)"),
    ({"Status": "exited", "ExitCode": 134, "OOMKilled": False}, False, "crash", "SIGABRT"),
    ({"Status": "exited", "ExitCode": 139, "OOMKilled": False}, False, "crash", "SIGSEGV"),
    ({"Status": "exited", "ExitCode": 137, "OOMKilled": False}, True, "crash", "SIGKILL (sent by the orchestrator)"),
    ({"Status": "exited", "ExitCode": 3, "OOMKilled": False}, False, "crash", "status 3"),
])
def test_container_exits_map_to_failure_categories(state, killed, category, words):
    info = describe_state(state, "1g", killed)
    assert info.category == category and words in info.message


def test_cpu_sets_and_devices():
    allowed = sorted(os.sched_getaffinity(0))
    assert cpu_set(1) == str(allowed[0])
    assert cpu_set(0) == cpu_set(len(allowed) + 5) == ",".join(map(str, allowed))
    assert device_options("cpu") == ([], [])
    assert device_options("cuda:2") == (["2"], []) and device_options("gpu:0") == (["0"], [])
    assert device_options("neuron:1") == ([], ["/dev/neuron1:/dev/neuron1"])
    assert device_options("tpu:2") == ([], ["/dev/accel2:/dev/accel2"])
