"""torch files crafted to run code when opened (tests/crafted_archives.py) never run it in this process: --model,
load_saved and speedster.load_model refuse them with one line, and the marker their payload would create never
appears. Ordinary archives still load (see also tests/test_torch_artifacts.py and tests/backends/test_torch.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.cli import main
from orchestrator.loader import SavedModelError, load_saved
from speedster_run.shared import export_archive
from speedster_run.shared.torch_io import load_export, load_torchscript
from tests.crafted_archives import CRAFTED, SmallModel, save_small_model

REFUSED = {name: entry for name, entry in CRAFTED.items() if entry[1] is not None}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return save_small_model(tmp_path_factory.mktemp("small") / "small.pt2")


def crafted(small: Path, tmp_path: Path, name: str) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    path = CRAFTED[name][0](small, tmp_path / "model.pt2", marker)
    return path, marker


def saved_directory(model: Path, directory: Path) -> Path:
    """A directory as save_model writes it around `model` (the torch backend's eager artifact)."""
    directory.mkdir()
    (directory / "model.pt2").write_bytes(model.read_bytes())
    manifest = {"manifest_version": 1, "backend": "torch", "format": "torch_export", "file_name": "model.pt2",
                "precision": "fp32", "variant": "eager", "options": {}, "device": "cpu", "threads": 1,
                "files": {"model.pt2": hashlib.sha256(model.read_bytes()).hexdigest()}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    meta = {"api_version": 1, "input_names": ["x"], "input_dtypes": {"x": "float32"}, "input_shapes": {"x": [2, 4]},
            "dynamic_axes": {}, "output_structure": {"leaf": 0}, "framework": "torch", "device": "cpu",
            "torch_device": "cpu"}
    (directory / "speedster.json").write_text(json.dumps(meta))
    return directory


@pytest.mark.parametrize("name", REFUSED)
def test_cli_refuses_a_crafted_archive_in_one_line(small, tmp_path, capsys, name):
    path, marker = crafted(small, tmp_path, name)
    assert main(["--model", str(path), "--sandbox", "local", "--backends", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("speedster-run: error: model.pt2"), err
    assert REFUSED[name][1] in err, err
    assert not marker.exists()


@pytest.mark.parametrize("name", REFUSED)
def test_load_saved_and_load_model_refuse_a_crafted_archive(small, tmp_path, name):
    import speedster

    path, marker = crafted(small, tmp_path, name)
    directory = saved_directory(path, tmp_path / "saved")
    with pytest.raises(SavedModelError, match="torch could not load model.pt2") as info:
        load_saved(directory)
    assert "\n" not in str(info.value) and REFUSED[name][1] in str(info.value)
    with pytest.raises(SavedModelError, match="torch could not load model.pt2"):
        speedster.load_model(directory, execution="in-process")
    assert not marker.exists()


def test_trust_needs_a_runner_in_a_container(small, tmp_path, capsys):
    path, marker = crafted(small, tmp_path, "example inputs")
    assert main(["--model", str(path), "--trust-model", "--sandbox", "local"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "this run's is a local process" in err and "images build torch" in err, err
    import speedster

    with pytest.raises(SavedModelError, match="trust_model=True loads it only in a runner in a container"):
        speedster.load_model(saved_directory(path, tmp_path / "saved"), trust_model=True, sandbox="local")
    assert not marker.exists()


def test_the_crafted_payloads_do_run_under_plain_torch_export_load(small, tmp_path):
    """The premise: without the checks, opening these archives runs their payload."""
    for name in ("pickled weight", "opaque object", "example inputs", "shape expression", "legacy format"):
        directory = tmp_path / name.replace(" ", "_")
        directory.mkdir()
        path, marker = crafted(small, directory, name)
        try:
            torch.export.load(str(path))
        except Exception:  # the payload's return value (os.system's exit status) breaks the load, after it ran
            pass
        assert marker.exists(), name


def test_guard_code_is_never_compiled(small, tmp_path):
    path, marker = crafted(small, tmp_path, "guard code")
    x = torch.randn(2, 4)
    torch.export.load(str(path)).module()(x)  # unchecked, ep.module() compiles the guard code, and the call runs it
    assert marker.exists()
    marker.unlink()
    program, _ = load_export(path)
    torch.testing.assert_close(program.module()(x), load_export(small)[0].module()(x))
    assert not marker.exists()


def test_ordinary_archives_load_with_their_weights(small, tmp_path):
    program, _ = load_export(small)
    torch.manual_seed(0)
    want = SmallModel().eval()
    x = torch.randn(2, 4)
    torch.testing.assert_close(program.module()(x), want(x))
    dynamic = tmp_path / "dynamic.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(want, (x,), dynamic_shapes=({0: batch},)), str(dynamic))
    program, _ = load_export(dynamic)
    torch.testing.assert_close(program.module()(torch.ones(5, 4)), want(torch.ones(5, 4)))


@pytest.mark.parametrize("text, accepted", [
    ("Symbol('s77', positive=True, integer=True)", True),
    ("Mul(Integer(3), Symbol('s77', positive=True, integer=True))", True),
    ("FloorDiv(Add(Symbol('s0'), Integer(-1)), Integer(2))", True),
    ("2*s0 + 1", True),
    ("__import__('os').system('true')", False),
    ("S('x')", False),  # sympify's S parses (evaluates) a string
    ("Symbol('s0').func", False),
    ("Symbol('a b')", False),
    ("(lambda: 1)()", False),
    ("[Integer(1)][0]", False),
])
def test_shape_expression_check(text, accepted):
    if accepted:
        export_archive._check_expression(text, "m.pt2", "models/model.json")
    else:
        with pytest.raises(export_archive.UntrustedArchiveError, match="^m.pt2: models/model.json has a symbolic"):
            export_archive._check_expression(text, "m.pt2", "models/model.json")


def test_torchscript_that_reads_host_files_is_refused(tmp_path, capsys):
    class ReadsAFile(torch.nn.Module):
        def forward(self, x):
            return x + torch.from_file("/etc/hostname", shared=False, size=1, dtype=torch.uint8).float()

    path = tmp_path / "reads.torchscript"
    torch.jit.save(torch.jit.script(ReadsAFile()), str(path))
    with pytest.raises(export_archive.UntrustedArchiveError, match="calls from_file"):
        load_torchscript(path)
    assert main(["--model", str(path), "--sandbox", "local", "--input-shape", "x=1"]) == 2
    assert "calls from_file" in capsys.readouterr().err


def test_onnx_external_data_outside_the_directory_is_refused(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from orchestrator.errors import UserError
    from orchestrator.model_source import model_files

    (tmp_path / "model").mkdir()
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(tmp_path / "model" / "m.onnx"), save_as_external_data=True, location="m.data",
              size_threshold=0)
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 64)
    os.symlink(secret, tmp_path / "model" / "link.data")
    for location in ("../secret", str(secret), "link.data"):
        tampered = onnx.load(str(tmp_path / "model" / "m.onnx"), load_external_data=False)
        for entry in tampered.graph.initializer[0].external_data:
            entry.value = location if entry.key == "location" else entry.value
        path = tmp_path / "model" / "evil.onnx"
        onnx.save(tampered, str(path))
        with pytest.raises(UserError, match=f"external data location {location!r} is outside"):
            model_files(path, "onnx")
        assert main(["--model", str(path), "--sandbox", "local"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is outside the model's directory" in err, err
    assert model_files(tmp_path / "model" / "m.onnx", "onnx") == ["m.onnx", "m.data"]
