"""scripts/gpu-check.sh, the one command a lent GPU host runs, in its dry mode on this CPU: the same steps (models
built, speedster-run per model, the GPU tests, the summary) on tiny models, so the script is known to work before
the minutes on a GPU are spent."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_the_dry_run_writes_every_report_and_the_summary(tmp_path):
    out = tmp_path / "gpu-check"
    result = subprocess.run([str(REPO / "scripts" / "gpu-check.sh"), str(out), "--dry-run"], capture_output=True,
                            text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    # what comes back from a lease: at most 8 files, none in a subfolder
    files = sorted(p.name for p in out.iterdir())
    assert files == ["environment.txt", "gpu-tests.log", "mlp.json", "mlp.log", "summary.md", "tiny_cnn.json",
                     "tiny_cnn.log"]
    for model in ("tiny_cnn", "mlp"):
        report = json.loads((out / f"{model}.json").read_text())
        assert report["config"]["device"] == "cpu" and report["winner"], model
        assert {c["backend"] for c in report["candidates"]} >= {"torch", "onnxruntime"}
    summary = (out / "summary.md").read_text()
    assert "### Overview" in summary and "| tiny_cnn | exit 0 |" in summary and "| mlp | exit 0 |" in summary
    assert "GPU tests (pytest -m gpu) | exit 0" in summary  # collected and skipped here, naming the GPU
    assert "needs a CUDA GPU" in (out / "gpu-tests.log").read_text()
