"""A device the host (or its runners) lacks is a configuration error before anything runs, naming what was sought."""

from __future__ import annotations

import glob

import pytest

from orchestrator.config import RunConfig
from orchestrator.errors import UserError
from orchestrator.host_devices import check_present
from orchestrator.run import Run
from speedster_run.runner.v1 import runner_pb2 as pb
from tests.conftest import assert_user_error, cli

needs_no_gpu = pytest.mark.skipif(bool(glob.glob("/dev/nvidia[0-9]*")), reason="this host has an NVIDIA GPU")


@needs_no_gpu
def test_cuda_on_a_host_without_a_gpu_is_a_user_error_before_any_runner_starts(mlp_model):
    result = cli("--model", mlp_model, "--device", "cuda", "--sandbox", "local")
    assert_user_error(result, "--device cuda:0: no NVIDIA GPU 0 on this host")
    assert "/dev/nvidia0" in result.stderr and "starting the" not in result.stderr


@pytest.mark.parametrize("device, node", [("neuron:1", "/dev/neuron1"), ("tpu:0", "/dev/accel0")])
def test_each_accelerator_kind_names_its_device_node(device, node):
    if glob.glob(node):
        pytest.skip(f"this host has {node}")
    with pytest.raises(UserError, match=node):
        check_present(device)
    check_present("cpu")


def test_a_device_no_runner_sees_is_a_user_error(mlp_model):
    run = Run(RunConfig(model=mlp_model, device="cuda:0"), None, [], None, mlp_model.parent, print)
    run.descriptions = {"onnxruntime": pb.DescribeResponse(backend="onnxruntime", available=True, devices=["cpu"]),
                        "tensorrt": pb.DescribeResponse(backend="tensorrt", available=False)}
    with pytest.raises(UserError, match=r"--device cuda:0: no runner sees such a device \(onnxruntime: cpu; "
                                        r"tensorrt: unavailable\)"):
        run.check_device_seen()
    run.descriptions["onnxruntime"].devices.append("gpu:0")  # OpenVINO-style naming counts as the same device
    run.check_device_seen()
