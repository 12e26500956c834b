"""AWS Neuron backend: device names, compiler arguments and request checks everywhere; compiling and running where
torch-neuronx and a Neuron device are present (the image speedster-run/neuron on an inf2/trn1 instance)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runners.backends import neuron
from runners.backends.base import Availability, LoadSpec, refusal
from runners.backends.neuron import NeuronBackend, compiler_args, neuron_devices
from speedster_run.shared.errors import CandidateError

HAS_NEURONX = importlib.util.find_spec("torch_neuronx") is not None
AVAILABLE = NeuronBackend().probe().available


def spec(device: str = "neuron:0", precision: str = "fp32", variant: str = "default", fmt: str = "torch_export",
         path: Path = Path("m.pt2"), options: dict | None = None) -> LoadSpec:
    return LoadSpec(path, fmt, device, precision, variant, options or {}, 0, [], path.parent / "work")


def test_device_nodes_become_device_names_in_index_order() -> None:
    nodes = ["/dev/neuron10", "/dev/neuron2", "/dev/neuron0", "/dev/neuron_monitor", "/dev/neuronx"]
    assert neuron_devices(nodes) == ("neuron:0", "neuron:2", "neuron:10")
    assert neuron_devices([]) == ()


@pytest.mark.parametrize("precision,options,args", [
    ("fp32", {}, ["--auto-cast", "none", "--optlevel=2"]),
    ("bf16", {"optlevel": "3"}, ["--auto-cast", "matmult", "--auto-cast-type", "bf16", "--optlevel=3"]),
    ("fp16", {"compiler_args": "--model-type transformer"},
     ["--auto-cast", "matmult", "--auto-cast-type", "fp16", "--optlevel=2", "--model-type", "transformer"]),
])
def test_compiler_arguments(precision: str, options: dict, args: list) -> None:
    assert compiler_args(precision, options) == args


def test_bad_optlevel_fails_to_compile_and_int8_is_unavailable() -> None:
    with pytest.raises(CandidateError) as caught:
        compiler_args("fp32", {"optlevel": "9"})
    assert caught.value.category == "compile"
    with pytest.raises(CandidateError) as caught:
        compiler_args("int8", {})
    assert caught.value.category == "unavailable"


# What the probe answers on an inf2 instance with two devices.
ON_INFERENTIA = Availability(True, devices=("neuron:0", "neuron:1"), offers=neuron.OFFERS)


@pytest.mark.parametrize("request_,words", [
    (spec(device="cpu"), "runs on neuron"),
    (spec(fmt="onnx"), "torch_export or torchscript"),
    (spec(variant="static"), "fp32/static"),
    (spec(precision="int8"), "int8/default"),
])
def test_requests_it_cannot_serve_are_refused(request_: LoadSpec, words: str) -> None:
    assert words in refusal(NeuronBackend.name, ON_INFERENTIA, request_)


def test_servable_requests_pass() -> None:
    for request_ in (spec(device="neuron:1", precision="bf16"), spec(fmt="torchscript", precision="fp16")):
        assert refusal(NeuronBackend.name, ON_INFERENTIA, request_) is None


@pytest.mark.skipif(AVAILABLE, reason="torch-neuronx and a Neuron device are present here")
def test_load_where_neuron_is_missing_is_unavailable_and_says_why() -> None:
    with pytest.raises(CandidateError) as caught:
        NeuronBackend().load(spec())
    assert caught.value.category == "unavailable"
    assert caught.value.message in (neuron.NO_DEVICE, neuron.NOT_INSTALLED)


def test_module_import_does_not_import_torch() -> None:
    code = "import sys, runners.backends.neuron; assert not {'torch', 'torch_neuronx'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.skipif(AVAILABLE, reason="torch-neuronx and a Neuron device are present here")
def test_probe_says_why_it_is_unavailable_fast() -> None:
    started = time.perf_counter()
    availability = NeuronBackend().probe()
    assert time.perf_counter() - started < 1
    assert not availability.available
    assert availability.reason in ((neuron.NO_DEVICE,) if HAS_NEURONX else (neuron.NOT_INSTALLED,))
    assert "speedster-run/neuron" in neuron.NOT_INSTALLED


@pytest.mark.skipif(not AVAILABLE, reason="needs an AWS Neuron device and torch-neuronx")
@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-3), ("bf16", 0.05)])
def test_compiles_runs_saves_and_reloads_for_real(tmp_path: Path, precision: str, tolerance: float) -> None:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    x = torch.randn(2, 16)
    torch.export.save(torch.export.export(module, (x,)), str(tmp_path / "m.pt2"))
    request = spec(precision=precision, path=tmp_path / "m.pt2")
    request.calibration = [{"x": x.numpy()}]
    model = NeuronBackend().load(request)
    want = module(x).detach().numpy()
    got = model.run({model.inputs[0].name: x.numpy()})["output_0"]
    assert np.mean(np.abs(got - want)) / np.mean(np.abs(want)) < tolerance
    (tmp_path / "saved").mkdir()
    artifact = model.save(tmp_path / "saved")
    again = NeuronBackend().load(spec(precision=precision, fmt=artifact.format, options=artifact.options,
                                      path=tmp_path / "saved" / artifact.file_name))
    np.testing.assert_array_equal(again.run({model.inputs[0].name: x.numpy()})["output_0"], got)
