"""PyTorch/XLA backend: device choice and request checks everywhere; compiling and running where torch_xla is
installed (the image speedster-run/xla: on the CPU anywhere, on TPUs on a TPU VM)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from runners.backends import xla
from runners.backends.base import Availability, LoadSpec, refusal
from runners.backends.xla import XlaBackend, offers_for, pjrt_device, runner_devices
from speedster_run.shared.errors import CandidateError

HAS_XLA = importlib.util.find_spec("torch_xla") is not None
needs_xla = pytest.mark.skipif(not HAS_XLA, reason="needs torch_xla (the image speedster-run/xla)")
ON_TPU = HAS_XLA and XlaBackend().probe().versions.get("pjrt_device") == "TPU"


def spec(device: str = "cpu", precision: str = "fp32", variant: str = "lazy", fmt: str = "torch_export",
         path: Path = Path("m.pt2"), calibration: list | None = None) -> LoadSpec:
    return LoadSpec(path, fmt, device, precision, variant, {}, 0, calibration or [], path.parent / "work")


@pytest.mark.parametrize("environ,nodes,libtpu,want", [
    ({}, [], False, "CPU"),
    ({}, ["/dev/accel0"], False, "CPU"),  # devices without the TPU runtime
    ({}, ["/dev/vfio/0"], True, "TPU"),
    ({"PJRT_DEVICE": "cpu"}, ["/dev/accel0"], True, "CPU"),
    ({"PJRT_DEVICE": "CUDA"}, [], False, "CUDA"),
])
def test_pjrt_device_choice(environ: dict, nodes: list, libtpu: bool, want: str) -> None:
    assert pjrt_device(environ, nodes, libtpu) == want


def test_devices_and_offers_per_pjrt_type() -> None:
    assert runner_devices("TPU", 4) == ("tpu:0", "tpu:1", "tpu:2", "tpu:3")
    assert runner_devices("CPU", 1) == ("cpu",)
    assert runner_devices("CUDA", 2) == ()
    assert {(o.precision, o.variant, o.devices) for o in offers_for("CPU")} == {
        ("fp32", "lazy", ("cpu",)), ("fp32", "dynamo", ("cpu",))}
    assert {(o.precision, o.devices) for o in offers_for("TPU")} == {("fp32", ("tpu",)), ("bf16", ("tpu",))}
    assert all(o.formats == ("torch_export",) for o in offers_for("TPU"))


def probed(pjrt: str) -> Availability:
    """What the probe answers in a process whose PJRT device type is `pjrt`, with four devices."""
    return Availability(True, devices=runner_devices(pjrt, 4), offers=offers_for(pjrt))


@pytest.mark.parametrize("request_,pjrt,words", [
    (spec(device="cuda:0"), "CPU", "runs on cpu"),
    (spec(device="tpu:0"), "CPU", "runs on cpu"),
    (spec(device="cpu"), "TPU", "runs on tpu"),
    (spec(fmt="onnx"), "CPU", "torch_export"),
    (spec(precision="bf16"), "CPU", "bf16/lazy"),
    (spec(variant="eager"), "CPU", "fp32/eager"),
])
def test_requests_it_cannot_serve_are_refused(request_: LoadSpec, pjrt: str, words: str) -> None:
    assert words in refusal(XlaBackend.name, probed(pjrt), request_)


def test_servable_requests_pass() -> None:
    assert refusal(XlaBackend.name, probed("TPU"), spec(device="tpu:3", precision="bf16", variant="dynamo")) is None
    assert refusal(XlaBackend.name, probed("CPU"), spec()) is None


@pytest.mark.skipif(HAS_XLA, reason="torch_xla is installed here")
def test_load_without_torch_xla_is_unavailable_and_says_why() -> None:
    with pytest.raises(CandidateError) as caught:
        XlaBackend().load(spec())
    assert (caught.value.category, caught.value.message) == ("unavailable", xla.NOT_INSTALLED)


def test_module_import_does_not_import_torch_xla() -> None:
    code = "import sys, runners.backends.xla; assert not {'torch', 'torch_xla'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


@pytest.mark.skipif(HAS_XLA, reason="torch_xla is installed here")
def test_probe_says_why_it_is_unavailable_fast() -> None:
    started = time.perf_counter()
    availability = XlaBackend().probe()
    assert time.perf_counter() - started < 1
    assert (availability.available, availability.reason) == (False, xla.NOT_INSTALLED)
    assert "speedster-run/xla" in availability.reason


def _exported(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    x = torch.randn(3, 16)
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    with torch.no_grad():
        return path, x.numpy(), model(x).numpy()


@needs_xla
@pytest.mark.parametrize("variant", ["lazy", "dynamo"])
def test_compiles_runs_and_saves_for_real(tmp_path: Path, variant: str) -> None:
    device = "tpu:0" if ON_TPU else "cpu"
    path, x, want = _exported(tmp_path)
    model = XlaBackend().load(spec(device=device, variant=variant, path=path))
    got = model.run({model.inputs[0].name: x})
    np.testing.assert_allclose(got["output_0"], want, rtol=1e-4, atol=1e-4)
    assert model.details["pjrt_device"] == os.environ["PJRT_DEVICE"]
    (tmp_path / "saved").mkdir()
    artifact = model.save(tmp_path / "saved")
    assert (artifact.format, artifact.files) == ("torch_export", ("m.pt2",))


@pytest.mark.skipif(not ON_TPU, reason="needs a TPU")
def test_bf16_on_tpu(tmp_path: Path) -> None:
    path, x, want = _exported(tmp_path)
    model = XlaBackend().load(spec(device="tpu:0", precision="bf16", path=path))
    got = model.run({model.inputs[0].name: x})["output_0"]
    assert got.dtype == np.float32
    assert np.mean(np.abs(got - want)) / np.mean(np.abs(want)) < 0.05
