"""The CLI as a user meets it: exit codes, one-line errors, the table, report.json, --save and its loader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FAST, assert_user_error, cli, mlp_onnx, mystery_onnx, save_onnx



def test_run_prints_table_and_verdict_and_writes_report(mlp_model, tmp_path):
    report_path = tmp_path / "report.json"
    result = cli("--model", mlp_model, "--backends", "onnxruntime,openvino", "--report", report_path, *FAST)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime/fp32" in result.stdout and "openvino/fp32" in result.stdout
    assert "Winner: " in result.stdout and "median ms" in result.stdout
    assert "benchmark round 1/2" in result.stderr  # progress display
    report = json.loads(report_path.read_text())
    assert report["config"]["backends"] == ["onnxruntime", "openvino"]
    assert report["environment"]["threads"] >= 1 and "onnxruntime" in report["environment"]["backends"]
    assert report["environment"]["host"]["cpu"]
    rows = {row["name"]: row for row in report["candidates"]}
    openvino = rows["openvino/fp32"]
    assert openvino["status"] == "ok" and len(openvino["latencies_ns"]) == 2 and openvino["stats"]["n"] > 0
    assert openvino["speedup_ci"][0] <= openvino["speedup"] <= openvino["speedup_ci"][1]
    assert openvino["comparison"]["passed"] and openvino["compile_s"] > 0
    assert report["winner"] in rows


def test_user_errors_exit_2_with_one_line(tmp_path, mlp_model):
    assert_user_error(cli("--model", tmp_path / "missing.onnx"), "does not exist")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    assert_user_error(cli("--model", corrupt), "is not a valid ONNX model")
    assert_user_error(cli("--model", mlp_model, "--device", "quantum:0"), "unknown device")
    assert_user_error(cli("--model", mlp_model, "--backends", "nope"), "unknown backend 'nope'")
    assert_user_error(cli("--model", mlp_model, "--backend-option", "tvm=3"), "expected BACKEND:KEY=VALUE")
    assert_user_error(cli("--model", mlp_model, "--input-shape", "x=1x3x4"), "does not fit")
    assert_user_error(cli("--model", mlp_model, "--input-shape", "q=1x256"), "model's inputs are x")
    assert_user_error(cli("--model", mlp_model, "--precision", "fp8"), "unknown precision")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((1, 100), np.float32))
    assert_user_error(cli("--model", mlp_model, "--inputs", wrong), "does not fit")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert_user_error(cli("--model", mlp_model, "--save", tmp_path / "taken"), "not an empty directory")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_no_qualifying_candidate_exits_1(tmp_path):
    result = cli("--model", mystery_onnx(tmp_path / "mystery.onnx"), "--backends", "onnxruntime", *FAST)
    assert result.returncode == 1, result.stderr
    assert "No candidate qualified" in result.stdout


def test_backends_lists_every_backend_with_the_truth():
    result = cli("backends")
    assert result.returncode == 0, result.stderr
    for name in ("onnxruntime", "openvino", "torch"):
        assert name in result.stdout
    assert "int8-static@cpu" in result.stdout and "int8-nncf@cpu" in result.stdout


def test_several_inputs_and_outputs_with_given_inputs(tmp_path):
    """Two inputs (float and int64) and two outputs, inputs from --inputs files, every CPU backend for ONNX."""
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "T")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["T", "ids"], ["emb"]),
         helper.make_node("ReduceSum", ["emb", "axes"], ["pooled"], keepdims=0),
         helper.make_node("Add", ["pooled", "x"], ["sum"]),
         helper.make_node("Relu", ["sum"], ["relu"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("relu", TensorProto.FLOAT, [1, 8])],
        [table, numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "two.onnx")
    inputs = []
    for i in range(2):
        path = tmp_path / f"in{i}.npz"
        np.savez(path, x=np.full((1, 8), i, np.float32), ids=np.arange(5, dtype=np.int64).reshape(1, 5) + i)
        inputs += ["--inputs", path]
    report_path = tmp_path / "r.json"
    result = cli("--model", model, "--backends", "onnxruntime,openvino", *inputs, "--report", report_path, *FAST)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(report_path.read_text())["candidates"]}
    assert rows["openvino/fp32"]["status"] == "ok"
    assert {o["name"] for o in rows["openvino/fp32"]["comparison"]["outputs"]} == {"sum", "relu"}


def test_symbolic_dims_need_input_shape(tmp_path):
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 4])])
    model = save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sym.onnx")
    assert_user_error(cli("--model", model), "--input-shape x=1x1x4")
    result = cli("--model", model, "--backends", "onnxruntime,openvino", "--input-shape", "x=2x7x4", *FAST)
    assert result.returncode == 0, result.stderr


def test_external_data_model_runs_on_every_onnx_backend(tmp_path):
    import onnx

    source = mlp_onnx(tmp_path / "plain.onnx")
    model = onnx.load(str(source))
    target = tmp_path / "ext" / "model.onnx"
    target.parent.mkdir()
    onnx.save_model(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (target.parent / "weights.bin").stat().st_size > 60_000
    result = cli("--model", target, "--backends", "onnxruntime,openvino", *FAST)
    assert result.returncode == 0, result.stderr
    assert "openvino/fp32" in result.stdout and "compile:" not in result.stdout


def test_save_writes_artifact_and_manifest_that_the_loader_runs(mlp_model, tmp_path):
    import onnxruntime as ort

    from orchestrator.loader import SavedModelError, load_saved

    save_dir = tmp_path / "saved"
    before = mlp_model.read_bytes()
    result = cli("--model", mlp_model, "--backends", "openvino", "--ignore-backends", "onnxruntime",
                 "--save", save_dir, *FAST)
    assert result.returncode == 0, result.stderr
    assert mlp_model.read_bytes() == before  # the user's model is never modified
    manifest = json.loads((save_dir / "manifest.json").read_text())
    assert set(manifest["files"]) <= {p.name for p in save_dir.iterdir()}
    model = load_saved(save_dir)
    x = np.random.default_rng(5).standard_normal((1, 256)).astype(np.float32)
    expected = ort.InferenceSession(str(mlp_model)).run(None, {"x": x})[0]
    got = next(iter(model({"x": x}).values()))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    model.close()
    (save_dir / manifest["file_name"]).write_bytes(b"tampered")
    with pytest.raises(SavedModelError, match="sha256"):
        load_saved(save_dir)


def test_the_cli_defaults_are_the_run_configurations(mlp_model):
    """One place for each default: a run from the CLI with no options is a RunConfig with its own defaults (the
    sandbox, no --timeout so each backend's own deadline, the measurement the runner uses)."""
    from orchestrator.cli import build_config, run_parser
    from orchestrator.config import DEFAULT_SANDBOX, RunConfig, TimingConfig
    from speedster_run.shared import measure

    config = build_config(run_parser().parse_args(["--model", str(mlp_model)]))
    default = RunConfig(model=mlp_model)
    assert config.sandbox == default.sandbox == DEFAULT_SANDBOX
    assert config.timeout_s is None and config.timing == default.timing == TimingConfig()
    assert (config.samples, config.seed) == (default.samples, default.seed)
    plan = measure.TimingPlan()
    assert (config.timing.warmup_iterations, config.timing.window_iterations, config.timing.stability_pct,
            config.timing.stable_windows) == (plan.warmup_iterations, plan.window_iterations, plan.stability_pct,
                                              plan.stable_windows)
