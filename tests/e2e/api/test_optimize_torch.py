"""optimize_model / save_model / load_model on torch models and ONNX files, with the real CPU backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from orchestrator.api.compilers import only
from speedster import load_model, optimize_model, save_model
from tests.conftest import mlp_onnx

pytestmark = pytest.mark.slow
RUN = {"sandbox": "local", "measure_s": 0.2, "quiet": True}  # short measurements: these tests check behaviour
OTHERS = {"onnxruntime": only("onnxruntime"), "openvino": only("openvino"), "torch": only("torchscript")}


def small_resnet() -> torch.nn.Module:
    """A torchvision-style ResNet (stem, four stages of basic blocks, pooled Linear head), random weights."""
    from orchestrator.zoo import _calibrate_batch_norm, resnet

    torch.manual_seed(0)
    model = resnet((1, 1, 1, 1), bottleneck=False, num_classes=10)
    _calibrate_batch_norm(model, (3, 64, 64))
    return model.eval()


@pytest.fixture(scope="module")
def cnn():
    return small_resnet()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(1)
    return [torch.randn(2, 3, 64, 64) for _ in range(3)]


def close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-2) -> bool:
    return float((a - b).abs().max()) <= tolerance * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch"])
def test_cnn_through_each_cpu_backend_saved_and_loaded(cnn, images, backend, tmp_path):
    optimized = optimize_model(cnn, [((x,), torch.tensor([0, 1])) for x in images], ignore_compilers=OTHERS[backend],
                               **RUN)
    assert optimized.backend == backend and optimized.precision == "fp32" and optimized.execution == "in-process"
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = cnn(x)
    out = optimized(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10) and close(out, expected)
    assert close(optimized.forward(x), expected)
    save_model(optimized, tmp_path / "saved")
    manifest = json.loads((tmp_path / "saved" / "manifest.json").read_text())
    assert manifest["backend"] == backend and manifest["image"].startswith(f"speedster-run/{backend}:")
    loaded = load_model(tmp_path / "saved")
    assert loaded.backend == backend and close(loaded(x), expected)
    with pytest.raises(ValueError, match=r"takes 2x3x64x64 \(the model is static: pass dynamic_info"):
        loaded(torch.randn(1, 3, 64, 64))


def test_int8_allowed_by_metric_drop_ths(cnn, images):
    optimized = optimize_model(cnn, [((x,),) for x in images], metric_drop_ths=2,
                               ignore_compilers=only("onnxruntime", "openvino"), **RUN)
    rows = {r.name: r for r in optimized.report.candidates}
    int8 = [r for r in rows.values() if r.precision == "int8"]
    assert {r.backend for r in int8} >= {"onnxruntime", "openvino"}
    assert all(r.status == "ok" and r.comparison.drop <= 2 for r in int8), [(r.name, r.failure) for r in int8]
    x = images[0]
    with torch.inference_mode():
        assert optimized(x).shape == cnn(x).shape


def test_dataloader_accuracy_metric_and_stored_latencies(cnn, tmp_path, monkeypatch):
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(2)
    inputs = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        labels = cnn(inputs).argmax(-1)
    labels[:2] = (labels[:2] + 1) % 10  # two wrong labels: the original's accuracy is 0.75
    monkeypatch.chdir(tmp_path)
    optimized = optimize_model(cnn, DataLoader(TensorDataset(inputs, labels), batch_size=4), metric="accuracy",
                               metric_drop_ths=0.0, ignore_compilers=only("onnxruntime", "openvino"),
                               store_latencies=True, **RUN)
    checked = [r for r in optimized.report.candidates if r.comparison is not None and not r.is_original]
    assert checked and all(r.comparison.drop == 0.0 and r.status == "ok" for r in checked)
    stored = json.loads(next(tmp_path.glob("latencies_ResNet_*.json")).read_text())
    assert stored["winner"] == optimized.report.winner
    winner = stored["candidates"][stored["winner"]]
    assert winner["median_ms"] > 0 and len(winner["latencies_ms"]) >= 2 and winner["metric_drop"] == 0.0


def test_custom_metric_sees_structured_outputs_and_can_reject_everything(cnn, images):
    calls = []

    def worst_difference(original, optimized, labels):
        calls.append((len(original), type(original[0]).__name__, labels[:1]))
        return max(float((a - b).abs().max()) for a, b in zip(original, optimized))

    data = [((x,), torch.tensor([3, 4])) for x in images]
    optimized = optimize_model(cnn, data, metric=worst_difference, ignore_compilers=OTHERS["onnxruntime"], **RUN)
    assert optimized is not None and calls[0][:2] == (3, "Tensor") and calls[0][2][0].tolist() == [3, 4]

    def always_bad(original, optimized, labels):
        return 1.0

    assert optimize_model(cnn, data, metric=always_bad, metric_drop_ths=0.5, ignore_compilers=OTHERS["openvino"],
                          **RUN) is None


def test_dynamic_batch(cnn, images):
    info = {"inputs": [{0: {"name": "batch", "min_val": 1, "opt_val": 2, "max_val": 6}}], "outputs": [{0: "batch"}]}
    optimized = optimize_model(cnn, [((x,),) for x in images], dynamic_info=info,
                               ignore_compilers=OTHERS["onnxruntime"], **RUN)
    assert set(optimized.summary["latency_by_shape"]) == {"min (batch=1)", "opt (batch=2)", "max (batch=6)"}
    for batch in (1, 5, 6):
        x = torch.randn(batch, 3, 64, 64)
        with torch.inference_mode():
            assert close(optimized(x), cnn(x))
    with pytest.raises(ValueError, match=r"takes 1..6x3x64x64"):
        optimized(torch.randn(7, 3, 64, 64))


def test_model_through_its_runner(cnn, images, tmp_path):
    optimized = optimize_model(cnn, [((x,),) for x in images], ignore_compilers=OTHERS["openvino"],
                               execution="runner", **RUN)
    assert optimized.execution == "openvino runner (local sandbox)"
    x = images[0]
    with torch.inference_mode():
        assert close(optimized(x), cnn(x))
    optimized.save(tmp_path / "saved")
    loaded = load_model(tmp_path / "saved", execution="runner", sandbox="local")
    assert "runner" in loaded.execution and close(loaded(x), optimized(x), 1e-5)
    loaded.close()


def test_onnx_file_with_numpy_inputs(tmp_path):
    path = mlp_onnx(tmp_path / "mlp.onnx")
    before = path.read_bytes()
    rng = np.random.default_rng(0)
    data = [((rng.standard_normal((2, 256), dtype=np.float32),),) for _ in range(3)]
    optimized = optimize_model(str(path), data, ignore_compilers=only("onnxruntime"), **RUN)
    out = optimized(data[0][0][0])
    assert isinstance(out, list) and isinstance(out[0], np.ndarray) and out[0].shape == (2, 64)
    assert path.read_bytes() == before  # the user's file is untouched


def test_load_model_errors(cnn, images, tmp_path):
    with pytest.raises(Exception, match="no such directory"):
        load_model(tmp_path / "missing")
    optimized = optimize_model(cnn, [((x,),) for x in images], ignore_compilers=OTHERS["onnxruntime"], **RUN)
    saved = optimized.save(tmp_path / "saved")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="neither empty nor a previous save"):
        optimized.save(tmp_path / "mine")
    manifest = json.loads((saved / "manifest.json").read_text())
    artifact = saved / manifest["file_name"]
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    with pytest.raises(Exception, match="differs from what was saved"):
        load_model(saved)
    elsewhere = optimized.save(tmp_path / "elsewhere")
    manifest["backend"] = "tensorrt"
    (elsewhere / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="backend tensorrt is neither importable here"):
        load_model(elsewhere, sandbox="local")


@pytest.mark.parametrize("kwargs, message", [
    ({"ignore_compilers": ["tensorrt"]}, "valid names: onnxruntime"),
    ({"metric": "f1"}, "use 'numeric_precision' or 'accuracy'"),
    ({"metric": "accuracy"}, 'metric="accuracy" needs labels'),
    ({"optimization_time": "fast"}, "use constrained or unconstrained"),
    ({"device": "quantum"}, "unknown device"),
    ({"dynamic_info": {"inputs": [{0: {"name": "batch", "min_val": 2, "opt_val": 1, "max_val": 4}}]}},
     "need 1 <= min_val <= opt_val <= max_val"),
    ({"dynamic_info": {"inputs": [{4: "batch"}]}}, "axis 4 does not exist"),
])
def test_bad_arguments(cnn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimize_model(cnn, [((torch.randn(1, 3, 64, 64),),)], **RUN, **kwargs)


def test_model_that_cannot_be_exported_says_why():
    class Branchy(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow
                return x.nonzero()
            return x

    with pytest.raises(RuntimeError, match="cannot be exported for the backends .*torch.export"):
        optimize_model(Branchy(), [((torch.randn(1, 4),),)], **RUN)
