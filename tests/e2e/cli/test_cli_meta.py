"""What a pipeline asks the CLI before and around a run: versions, the backends as JSON, the help, quiet runs."""

from __future__ import annotations

import json
from importlib import metadata

from speedster_run.shared import catalog
from tests.conftest import FAST, cli, mlp_onnx


def test_version_names_this_version_and_each_backends_library():
    result = cli("--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"speedster-run {metadata.version('speedster-run')} (runner protocol ")
    for entry in catalog.CATALOG:
        assert any(line.split()[:2] == [entry.name, entry.main_package] for line in lines[1:]), entry.name
    assert f"onnxruntime {metadata.version('onnxruntime')}" in result.stdout  # installed here: its version
    assert "tensorrt-cu12 not installed here" in result.stdout


def test_backends_as_json():
    result = cli("backends", "--json")
    assert result.returncode == 0, result.stderr
    backends = {b["name"]: b for b in json.loads(result.stdout)}
    assert set(catalog.names()) <= set(backends)
    ort = backends["onnxruntime"]
    assert ort["available"] and ort["versions"]["onnxruntime"] == metadata.version("onnxruntime")
    assert {"precision": "int8", "variant": "static", "devices": ["cpu"], "formats": ["onnx"]} in ort["offers"]
    assert not backends["tensorrt"]["available"] and backends["tensorrt"]["reason"]


def test_help_lists_the_subcommands_and_example_model_names_itself():
    usage = cli("--help").stdout.split("\n\n")[0]
    assert "{backends,compare,images,example-model}" in usage and "--version" in usage
    example = " ".join(cli("example-model", "--help").stdout.split())  # help wraps to the terminal
    assert example.startswith("usage: speedster-run example-model") and ".pt2 a torch.export archive" in example


def test_example_model_picks_the_format_from_the_suffix(tmp_path):
    import zipfile

    assert cli("example-model", "mlp", tmp_path / "m.pt2").returncode == 0
    assert cli("example-model", "mlp", tmp_path / "m.torchscript").returncode == 0
    with zipfile.ZipFile(tmp_path / "m.pt2") as archive:  # torch.export keeps its graph as models/*.json
        assert any(name.endswith(".json") and "/models/" in name for name in archive.namelist())
    with zipfile.ZipFile(tmp_path / "m.torchscript") as archive:  # TorchScript keeps code/ and constants.pkl
        assert any("/code/" in name for name in archive.namelist())


def test_quiet_keeps_stderr_empty_and_the_results_on_stdout(tmp_path):
    result = cli("--model", mlp_onnx(tmp_path / "mlp.onnx"), "--backends", "onnxruntime", "--quiet", *FAST)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and "Winner" in result.stdout and "median ms" in result.stdout
