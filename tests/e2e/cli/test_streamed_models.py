"""Runners without a shared filesystem get the model streamed in chunks, external data included."""

from __future__ import annotations

import onnx

from orchestrator.config import RunConfig, TimingConfig
from orchestrator.runner_client import RunnerClient
from orchestrator.run import optimize
from orchestrator.sandboxes.local import LocalSandbox
from tests.conftest import mlp_onnx


class _NoSharedFilesystem(LocalSandbox):
    """Local runners, but treated as if they could not read the orchestrator's files (as remote ones cannot)."""

    shares_filesystem = False


def test_models_are_uploaded_once_per_runner_with_their_external_data(tmp_path, monkeypatch):
    model = onnx.load(str(mlp_onnx(tmp_path / "plain.onnx", inputs=1024)))
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (path.parent / "weights.bin").stat().st_size > 256_000  # several 1 MiB-or-less chunks are not needed

    uploads = []
    original_upload = RunnerClient.upload

    def spy(self, directory, names, timeout_s):
        uploads.append(list(names))
        return original_upload(self, directory, names, timeout_s)

    monkeypatch.setattr(RunnerClient, "upload", spy)
    config = RunConfig(model=path, backends=("onnxruntime", "openvino"), metric_drop_ths=0.5, samples=2,
                       timing=TimingConfig(time_budget_s=0.2, rounds=1, warmup_iterations=1))
    report = optimize(config, sandbox=_NoSharedFilesystem())
    rows = {row.name: row for row in report.candidates}
    for name in ("onnxruntime/fp32", "onnxruntime/int8-static", "openvino/fp32", "openvino/int8-nncf"):
        assert rows[name].status == "ok", (name, rows[name].failure)
    # One upload per runner (onnxruntime, openvino), shared by all of its candidates, each with the weights file.
    assert uploads == [["model.onnx", "weights.bin"], ["model.onnx", "weights.bin"]]
