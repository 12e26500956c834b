"""TorchBackend on a CUDA GPU: every offer for cuda compiles, runs and matches the CPU's eager outputs within its
precision. Runs on a GPU host (scripts/gpu-check.sh runs it there); elsewhere it skips, naming the missing GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch

from orchestrator import zoo  # noqa: E402
from runners.backends.base import LoadSpec  # noqa: E402
from runners.backends.torch import TorchBackend  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 3e-2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("tiny_cuda")
    model, (x,) = zoo.build("tiny_cnn", batch=4)
    path = zoo.save("tiny_cnn", directory / "tiny.pt2", batch=4)
    with torch.no_grad():
        want = model(x).numpy()
    return {"path": path, "x": x.numpy(), "want": want}


def test_the_probe_sees_the_gpu_and_offers_reduced_precision_on_it():
    availability = TorchBackend().probe()
    assert availability.available and any(d.startswith("cuda") for d in availability.devices), availability
    cuda_offers = {(o.precision, o.variant) for o in availability.offers if "cuda" in o.devices}
    assert {("fp32", "eager"), ("fp16", "eager"), ("bf16", "eager"), ("fp32", "inductor")} <= cuda_offers


@pytest.mark.parametrize("precision,variant", [("fp32", "eager"), ("fp16", "eager"), ("bf16", "eager"),
                                               ("fp32", "torchscript"), ("fp32", "inductor")])
def test_each_cuda_offer_matches_the_cpu_reference(tiny, tmp_path: Path, precision: str, variant: str):
    spec = LoadSpec(model_path=tiny["path"], format="torch_export", device="cuda:0", precision=precision,
                    variant=variant, options={}, threads=0, calibration=[], workdir=tmp_path)
    loaded = TorchBackend().load(spec)
    try:
        (got,) = loaded.run({"input": tiny["x"]}).values()
    finally:
        loaded.close()
    assert got.dtype == np.float32 and got.shape == tiny["want"].shape  # fp32 I/O whatever the compute precision
    drop = float(np.abs(got - tiny["want"]).mean() / np.abs(tiny["want"]).mean())
    assert drop < TOLERANCE[precision], (precision, variant, drop)
