"""--trust-model with runners on another host (--runner): the torch file is streamed to the torch runner, which reads
its signature and exports it to ONNX; this process never opens it, and the run leaves no upload behind."""

from __future__ import annotations

import json

from orchestrator.cli import main
from tests.crafted_archives import save_small_model
from tests.e2e.remote.support import RemoteRunner


def test_a_trusted_run_through_remote_runners(tmp_path, monkeypatch, capsys):
    import orchestrator.torch_artifacts as torch_artifacts

    def never(*args, **kwargs):
        raise AssertionError("the orchestrator opened the torch file")

    # Where this process opens torch files (inspection, ONNX export); the runners are processes of their own.
    monkeypatch.setattr(torch_artifacts, "_load", never)
    small = save_small_model(tmp_path / "small.pt2")
    torch_runner, ort_runner = RemoteRunner("torch", tmp_path / "torch"), RemoteRunner("onnxruntime", tmp_path / "ort")
    try:
        torch_runner.wait_serving()
        ort_runner.wait_serving()
        code = main(["--model", str(small), "--trust-model", "--runner", f"torch={torch_runner.address}",
                     "--runner", f"onnxruntime={ort_runner.address}", "--iterations", "20", "--rounds", "1",
                     "--report", str(tmp_path / "report.json")])
        assert code == 0, capsys.readouterr().err
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["source"]["exported_onnx"], report["source"]["export_error"]
        assert {c["name"]: c["status"] for c in report["candidates"]}["onnxruntime/fp32"] == "ok"
        assert [i["name"] for i in report["source"]["inputs"]] == ["x"]
        for runner in (torch_runner, ort_runner):
            assert not list(runner.scratch().glob("uploads/*")), "the run left an upload"
    finally:
        torch_runner.stop()
        ort_runner.stop()
