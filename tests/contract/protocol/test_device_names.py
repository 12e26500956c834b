"""A runner that sees the orchestrator's GPU N as its GPU 0 (a container) speaks of it by the orchestrator's name."""

from __future__ import annotations

from speedster_run.shared import devices
from runners.servicer import RunnerServicer
from speedster_run.runner.v1 import runner_pb2 as pb


def test_maps_for_each_device():
    assert devices.map_for("cpu") == devices.map_for("cuda:0") == devices.map_for("neuron:1") == ""
    mapping = devices.device_map(devices.map_for("gpu:2"))
    assert mapping == {"cuda:2": "cuda:0", "gpu:2": "gpu:0"}
    assert devices.inward("cuda:2", mapping) == "cuda:0" and devices.inward("cpu", mapping) == "cpu"
    assert devices.outward(["cpu", "cuda:0"], mapping) == ["cpu", "cuda:2"]


class DirectCall:
    """The servicer called directly, not over gRPC: a caller that waits, without a deadline."""

    def is_active(self) -> bool:
        return True

    def time_remaining(self) -> None:
        return None


def test_a_runner_describes_and_loads_by_the_orchestrators_names(monkeypatch, tmp_path):
    from tests.conftest import mlp_onnx

    # The CPU stands in for a renamed accelerator: the renaming is what is under test, not a GPU.
    monkeypatch.setenv(devices.ENV_VARIABLE, "cuda:3=cpu")
    servicer = RunnerServicer("onnxruntime", tmp_path / "work")
    description = servicer.Describe(pb.DescribeRequest(), DirectCall())
    assert list(description.devices) == ["cuda:3"]
    model = mlp_onnx(tmp_path / "mlp.onnx")
    from speedster_run.shared.files import sha256_file

    answer = servicer.Load(pb.LoadRequest(model=pb.ModelSource(path=str(model), sha256=sha256_file(model),
                                                               format="onnx"), device="cuda:3", precision="fp32",
                                          variant="default"), DirectCall())
    assert not answer.failure.category, answer.failure.message  # "cuda:3" as such would fail here: no GPU
    assert answer.details["providers"] == "CPUExecutionProvider"
