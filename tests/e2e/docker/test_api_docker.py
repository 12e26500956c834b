"""The Python API on the Docker sandbox: candidates in containers, and an optimized model that runs in its image."""

from __future__ import annotations

import pytest
import torch

from orchestrator.api.compilers import only
from speedster import load_model, optimize_model
from tests.docker_support import require_images

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_optimized_model_runs_in_its_image(runner_images, docker_engine, tmp_path):
    from orchestrator.zoo import build

    require_images(docker_engine, "torch")  # the original runs in it: skip (or fail in CI) naming it when missing

    model, _ = build("tiny_cnn", batch=2)
    data = [((torch.randn(2, 3, 32, 32),),) for _ in range(2)]
    optimized = optimize_model(model, data, backends=["openvino", "torch"], ignore_compilers=only("openvino"),
                               sandbox="docker", execution="runner", measure_s=0.2, quiet=True)
    rows = [r for r in optimized.report.candidates if r.backend == "openvino"]
    assert rows and all(r.image.startswith("speedster-run/openvino:") and r.image_digest for r in rows)
    assert optimized.execution == "openvino runner (docker sandbox)"
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = model(x)
    assert float((optimized(x) - expected).abs().max()) < 1e-3
    saved = optimized.save(tmp_path / "saved")
    optimized.close()
    loaded = load_model(saved, execution="runner", sandbox="docker")
    assert "docker" in loaded.execution and float((loaded(x) - expected).abs().max()) < 1e-3
    loaded.close()
    leftovers = docker_engine.containers.list(all=True, filters={"label": "io.speedster-run.backend=openvino"})
    assert leftovers == []
