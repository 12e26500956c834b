"""orchestrator.torch_artifacts and orchestrator.zoo against real torch: format detection, inspection, ONNX export."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import torch
import onnxruntime as ort

from orchestrator import zoo  # noqa: E402
from tests.torch_models import TwoInTwoOut  # noqa: E402
from orchestrator.torch_artifacts import (  # noqa: E402
    TorchArtifactError, TorchExportError, detect_format, export_onnx, inspect_torch_artifact,
)

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit:DeprecationWarning")  # TorchScript is deprecated
SUFFIX = {"torch_export": ".pt2", "torchscript": ".torchscript"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The tiny CNN saved four ways: both formats, static batch 1 and symbolic batch."""
    directory = tmp_path_factory.mktemp("tiny")
    paths = {(fmt, dynamic): zoo.save("tiny_cnn", directory / f"tiny{'_dyn' if dynamic else ''}{SUFFIX[fmt]}", fmt,
                                      dynamic_batch=dynamic)
             for fmt in SUFFIX for dynamic in (False, True)}
    model, _ = zoo.build("tiny_cnn")
    return {"paths": paths, "model": model}


def eager(model, *arrays: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(a) for a in arrays)).numpy()


def test_detect_format(tiny, tmp_path):
    assert detect_format(tiny["paths"]["torch_export", False]) == "torch_export"
    assert detect_format(tiny["paths"]["torchscript", True]) == "torchscript"
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.pt")  # a zip too, but plain tensors
    assert detect_format(tmp_path / "weights.pt") is None
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("a/readme.txt", "hello")
    assert detect_format(tmp_path / "other.zip") is None
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    assert detect_format(tmp_path / "model.onnx") is None
    assert detect_format(tmp_path / "missing.pt2") is None


@pytest.mark.parametrize("fmt", SUFFIX)
def test_inspect_reads_stored_specs(tiny, fmt):
    inputs, outputs = inspect_torch_artifact(tiny["paths"][fmt, True], fmt, {})
    assert [(i.name, i.dtype, i.shape, i.dim_names) for i in inputs] == [
        ("input", "float32", (None, 3, 32, 32), ("batch", "", "", ""))]
    assert [(o.name, o.dtype, o.shape, o.dim_names) for o in outputs] == [
        ("output_0", "float32", (None, 10), ("batch", ""))]
    static, _ = inspect_torch_artifact(tiny["paths"][fmt, False], fmt, {"input": ((1, 3, 32, 32), None)})
    assert static[0].shape == (1, 3, 32, 32)


def test_inspect_refuses_overrides_that_do_not_fit(tiny):
    path = tiny["paths"]["torch_export", True]
    with pytest.raises(TorchArtifactError, match="does not fit"):
        inspect_torch_artifact(path, "torch_export", {"input": ((2, 3, 64, 64), None)})
    with pytest.raises(TorchArtifactError, match="no input named image; its inputs: input"):
        inspect_torch_artifact(path, "torch_export", {"image": ((1, 3, 32, 32), None)})


def test_torchscript_without_specs_needs_input_shapes(tmp_path):
    torch.manual_seed(0)
    model = TwoInTwoOut().eval()
    path = tmp_path / "two.torchscript"
    torch.jit.save(torch.jit.trace(model, (torch.randn(2, 8), torch.randint(0, 16, (2, 4)))), str(path))
    with pytest.raises(TorchArtifactError) as info:
        inspect_torch_artifact(path, "torchscript", {})
    message = str(info.value)
    assert "\n" not in message and "--input-shape features=" in message and "--input-shape ids=" in message
    inputs, outputs = inspect_torch_artifact(path, "torchscript",
                                             {"features": ((3, 8), None), "ids": ((3, 4), "int64")})
    assert [(i.name, i.dtype, i.shape) for i in inputs] == [("features", "float32", (3, 8)), ("ids", "int64", (3, 4))]
    assert [(o.name, o.shape) for o in outputs] == [("output_0", (3, 3)), ("output_1", (3, 8))]


@pytest.mark.parametrize("fmt", SUFFIX)
def test_unreadable_file(tmp_path, fmt):
    path = tmp_path / f"broken{SUFFIX[fmt]}"
    path.write_bytes(b"garbage")
    with pytest.raises(TorchArtifactError, match=f"^broken{SUFFIX[fmt]} is not a readable") as info:
        inspect_torch_artifact(path, fmt, {})
    assert "\n" not in str(info.value)
    with pytest.raises(TorchExportError, match="is not a readable"):
        export_onnx(path, fmt, [], {}, tmp_path / "out.onnx")


@pytest.mark.parametrize("fmt, dynamic", [("torch_export", False), ("torch_export", True), ("torchscript", True)])
def test_export_onnx_matches_eager(tiny, tmp_path, fmt, dynamic):
    path = tiny["paths"][fmt, dynamic]
    inputs, _ = inspect_torch_artifact(path, fmt, {})
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32), dtype=np.float32)
    onnx_path = export_onnx(path, fmt, inputs, {"input": x}, tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output_0"]
    assert session.get_inputs()[0].shape == (["batch", 3, 32, 32] if dynamic else [1, 3, 32, 32])
    for batch in (1, 4) if dynamic else (1,):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], eager(tiny["model"], x), atol=1e-4)


def test_export_onnx_two_inputs_two_outputs(tmp_path):
    torch.manual_seed(0)
    model = TwoInTwoOut().eval()
    path = tmp_path / "two.pt2"
    batch = torch.export.Dim("batch")
    example = (torch.randn(2, 8), torch.randint(0, 16, (2, 4)))
    torch.export.save(torch.export.export(model, example, dynamic_shapes=({0: batch}, {0: batch})), str(path))
    inputs, outputs = inspect_torch_artifact(path, "torch_export", {})
    assert [(o.name, o.shape) for o in outputs] == [("output_0", (None, 3)), ("output_1", (None, 8))]
    feeds = {"features": example[0].numpy(), "ids": example[1].numpy()}
    session = ort.InferenceSession(str(export_onnx(path, "torch_export", inputs, feeds, tmp_path / "two.onnx")))
    assert [o.name for o in session.get_outputs()] == ["output_0", "output_1"]
    got = session.run(None, feeds)
    with torch.no_grad():
        want = model(*example)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), atol=1e-5)


def test_export_failure_is_one_line(tiny, tmp_path):
    inputs, _ = inspect_torch_artifact(tiny["paths"]["torchscript", False], "torchscript", {})
    wrong = {"input": np.zeros((1, 5, 32, 32), np.float32)}  # the model has 3 channels
    with pytest.raises(TorchExportError, match="^tiny.torchscript: ONNX export failed") as info:
        export_onnx(tiny["paths"]["torchscript", False], "torchscript", inputs, wrong, tmp_path / "x.onnx")
    assert "\n" not in str(info.value)


def test_zoo_resnet18_both_formats(tmp_path):
    model, (x,) = zoo.build("resnet18")
    assert sum(p.numel() for p in model.parameters()) == 11_689_512  # torchvision's resnet18
    assert not model.training
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1000) and 0.05 < float(y.std()) < 100  # calibrated batch norm: not degenerate
    for fmt in SUFFIX:
        path = zoo.save("resnet18", tmp_path / f"r18{SUFFIX[fmt]}", fmt)
        assert detect_format(path) == fmt
        inputs, outputs = inspect_torch_artifact(path, fmt, {})
        assert inputs[0].shape == (1, 3, 224, 224) and outputs[0].shape == (1, 1000)


def test_zoo_is_seeded_and_resnet50_has_torchvision_size():
    first, (x,) = zoo.build("tiny_cnn", batch=2)
    second, _ = zoo.build("tiny_cnn", batch=2)
    np.testing.assert_array_equal(eager(first, x.numpy()), eager(second, x.numpy()))
    resnet50 = zoo.MODELS["resnet50"][0]()  # constructed only: no calibration passes
    assert sum(p.numel() for p in resnet50.parameters()) == 25_557_032


def test_zoo_cli(tmp_path, capsys):
    out = tmp_path / "tiny.pt2"
    assert zoo.main(["tiny_cnn", str(out), "--batch", "2", "--dynamic-batch"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert detect_format(out) == "torch_export"
    with pytest.raises(SystemExit) as info:
        zoo.main(["resnet1000", str(tmp_path / "x.pt2")])
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_export_onnx_falls_back_to_the_torchscript_exporter(tiny, tmp_path, monkeypatch):
    import speedster_run.shared.torch_onnx as torch_onnx

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported op")

    monkeypatch.setattr(torch_onnx, "export_dynamo", refuse)
    path = tiny["paths"]["torch_export", True]
    inputs, _ = inspect_torch_artifact(path, "torch_export", {})
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    session = ort.InferenceSession(str(export_onnx(path, "torch_export", inputs, {"input": x}, tmp_path / "t.onnx")))
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32), dtype=np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], eager(tiny["model"], x), atol=1e-4)
