"""The whole product on a torch artifact: export to ONNX, every CPU backend and precision, int8 calibrated, save."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.e2e.cli.test_cli import FAST, cli


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    from orchestrator import zoo

    directory = tmp_path_factory.mktemp("cnn")
    return zoo.save("tiny_cnn", directory / "tiny_cnn.pt2"), zoo.save("tiny_cnn", directory / "tiny_cnn.pt",
                                                                        fmt="torchscript")


def test_torch_export_artifact_competes_on_every_backend_and_precision(tiny_cnn, tmp_path):
    report_path = tmp_path / "report.json"
    save_dir = tmp_path / "best"
    result = cli("--model", tiny_cnn[0], "--metric-drop-ths", "0.2", "--report", report_path, "--save", save_dir,
                 *FAST)
    assert result.returncode == 0, result.stderr + result.stdout
    report = json.loads(report_path.read_text())
    rows = {row["name"]: row for row in report["candidates"]}
    expected = ["torch/fp32-eager", "torch/fp32-torchscript", "torch/fp32-inductor", "onnxruntime/fp32",
                "onnxruntime/int8-dynamic", "onnxruntime/int8-static", "openvino/fp32", "openvino/int8-nncf"]
    for name in expected:
        assert rows[name]["status"] == "ok", (name, rows[name]["failure"])
        assert rows[name]["stats"]["n"] > 0 and rows[name]["comparison"]["passed"]
    assert rows["torch/fp32-eager"]["is_original"] and rows["torch/fp32-eager"]["speedup"] == 1.0
    assert report["source"]["exported_onnx"] is True
    # Calibrated quantisation really ran (the backends report what they did).
    assert "static" in rows["onnxruntime/int8-static"]["details"]["quantization"]
    assert int(rows["openvino/int8-nncf"]["details"]["fake_quantize_ops"]) > 0
    # fp32 candidates match the torch reference tightly; int8 ones within the user's threshold.
    assert rows["onnxruntime/fp32"]["comparison"]["drop"] < 1e-4
    assert rows["openvino/int8-nncf"]["comparison"]["drop"] <= 0.2
    assert report["winner"] in rows and (save_dir / "manifest.json").exists()

    from orchestrator.loader import load_saved

    model = load_saved(save_dir)
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)
    outputs = model({model.input_names[0]: x})
    assert next(iter(outputs.values())).shape[0] == 1
    model.close()


def test_torchscript_artifact_runs_with_torch_as_the_original(tiny_cnn):
    result = cli("--model", tiny_cnn[1], "--backends", "torch,onnxruntime", *FAST)
    assert result.returncode == 0, result.stderr
    assert "torch/fp32-eager" in result.stdout and "onnxruntime/fp32" in result.stdout
