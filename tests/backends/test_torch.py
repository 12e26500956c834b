"""TorchBackend against real torch, on tiny models built here and in the zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch

from orchestrator import zoo  # noqa: E402
from runners.backends.base import LoadSpec  # noqa: E402
from runners.backends.torch import TorchBackend  # noqa: E402
from speedster_run.shared.errors import CandidateError  # noqa: E402
from tests.torch_models import TwoInTwoOut  # noqa: E402

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit:DeprecationWarning")  # TorchScript is deprecated
FORMATS = ("torch_export", "torchscript")
SUFFIX = {"torch_export": ".pt2", "torchscript": ".torchscript"}


class ConvOnly(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, input):
        return torch.relu(self.conv(input))


def save(model, example: tuple, path: Path, fmt: str, dynamic: tuple | None = None) -> Path:
    """Saves without stored input specs: the backend must read what the artifact itself carries."""
    with torch.no_grad():
        if fmt == "torch_export":
            torch.export.save(torch.export.export(model, example, dynamic_shapes=dynamic), str(path))
        else:
            torch.jit.save(torch.jit.trace(model, example), str(path))
    return path


def spec(path: Path, fmt: str, workdir: Path, precision: str = "fp32", variant: str = "eager",
         calibration: list | None = None, options: dict | None = None) -> LoadSpec:
    return LoadSpec(model_path=path, format=fmt, device="cpu", precision=precision, variant=variant,
                    options=options or {}, threads=1, calibration=calibration or [], workdir=workdir)


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).mean() / np.abs(want).mean())


@pytest.fixture(scope="module")
def backend() -> TorchBackend:
    return TorchBackend()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """The zoo's tiny CNN in both formats with a symbolic batch, its eager reference and a sample."""
    directory = tmp_path_factory.mktemp("tiny")
    model, (x,) = zoo.build("tiny_cnn", batch=3)
    paths = {fmt: zoo.save("tiny_cnn", directory / f"tiny{SUFFIX[fmt]}", fmt, dynamic_batch=True) for fmt in FORMATS}
    with torch.no_grad():
        want = model(x).numpy()
    return {"model": model, "paths": paths, "x": x.numpy(), "want": want}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("mlp")
    model, (x,) = zoo.build("mlp", batch=8)
    paths = {fmt: zoo.save("mlp", directory / f"mlp{SUFFIX[fmt]}", fmt, batch=8) for fmt in FORMATS}
    with torch.no_grad():
        want = model(x).numpy()
    return {"paths": paths, "x": x.numpy(), "want": want}


def test_probe_offers(backend):
    availability = backend.probe()
    assert availability.available and availability.versions["torch"] == torch.__version__
    assert availability.devices[0] == "cpu"
    offers = {(o.precision, o.variant): o for o in availability.offers}
    assert set(offers) >= {("fp32", "eager"), ("fp32", "torchscript"), ("fp32", "inductor"), ("int8", "dynamic")}
    assert offers["fp32", "inductor"].formats == ("torch_export",)
    assert offers["int8", "dynamic"].devices == ("cpu",)
    assert set(offers["fp32", "eager"].formats) == set(FORMATS)
    if not torch.cuda.is_available():
        assert ("fp16", "eager") not in offers and ("bf16", "eager") not in offers


@pytest.mark.parametrize("fmt", FORMATS)
def test_eager_equals_torch(backend, tiny, tmp_path, fmt):
    loaded = backend.load(spec(tiny["paths"][fmt], fmt, tmp_path))
    assert [(i.name, i.dtype, i.shape, i.dim_names) for i in loaded.inputs] == [
        ("input", "float32", (None, 3, 32, 32), ("batch", "", "", ""))]
    assert [(o.name, o.shape) for o in loaded.outputs] == [("output_0", (None, 10))]
    assert loaded.details["threads"] == "1"
    got = loaded.run({"input": tiny["x"]})
    np.testing.assert_allclose(got["output_0"], tiny["want"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_frozen_torchscript_matches_eager(backend, tiny, tmp_path, fmt):
    loaded = backend.load(spec(tiny["paths"][fmt], fmt, tmp_path, variant="torchscript",
                               calibration=[{"input": tiny["x"]}]))
    np.testing.assert_allclose(loaded.run({"input": tiny["x"]})["output_0"], tiny["want"], atol=1e-4)


def test_inductor_matches_eager_and_reloads(backend, tiny, tmp_path):
    """The one Inductor compile of the suite (seconds on two cores); the artifact recompiles from the source."""
    path = tiny["paths"]["torch_export"]
    loaded = backend.load(spec(path, "torch_export", tmp_path, variant="inductor", calibration=[{"input": tiny["x"]}]))
    assert float(loaded.details["inductor_warmup_s"]) > 0
    np.testing.assert_allclose(loaded.run({"input": tiny["x"]})["output_0"], tiny["want"], atol=1e-4)
    (tmp_path / "saved").mkdir()
    artifact = loaded.save(tmp_path / "saved")
    assert (artifact.format, artifact.variant, artifact.file_name) == ("torch_export", "inductor", path.name)
    assert (tmp_path / "saved" / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_dynamic_quantizes_mlp(backend, mlp, tmp_path, fmt):
    loaded = backend.load(spec(mlp["paths"][fmt], fmt, tmp_path, "int8", "dynamic", [{"input": mlp["x"]}]))
    assert loaded.details["quantized_linear_layers"] == "3"
    got = loaded.run({"input": mlp["x"]})["output_0"]
    assert 0 < relative_error(got, mlp["want"]) < 0.05  # quantized for real, yet close


def test_int8_dynamic_on_cnn_quantizes_the_final_linear(backend, tiny, tmp_path):
    loaded = backend.load(spec(tiny["paths"]["torch_export"], "torch_export", tmp_path, "int8", "dynamic",
                               [{"input": tiny["x"]}]))
    assert loaded.details["quantized_linear_layers"] == "1"
    assert relative_error(loaded.run({"input": tiny["x"]})["output_0"], tiny["want"]) < 0.05


@pytest.mark.parametrize("fmt", FORMATS)
def test_int8_dynamic_without_linear_fails(backend, tmp_path, fmt):
    path = save(ConvOnly().eval(), (torch.randn(1, 3, 8, 8),), tmp_path / f"conv{SUFFIX[fmt]}", fmt)
    with pytest.raises(CandidateError) as info:
        backend.load(spec(path, fmt, tmp_path, "int8", "dynamic", [{"input": np.ones((1, 3, 8, 8), np.float32)}]))
    assert (info.value.category, info.value.message) == ("compile", "no Linear layer to quantize")


@pytest.mark.parametrize("fmt", FORMATS)
def test_two_inputs_two_outputs_with_int64(backend, tmp_path, fmt):
    torch.manual_seed(0)
    model = TwoInTwoOut().eval()
    features, ids = torch.randn(2, 8), torch.randint(0, 16, (2, 4))
    path = save(model, (features, ids), tmp_path / f"two{SUFFIX[fmt]}", fmt)
    feeds = {"features": features.numpy(), "ids": ids.numpy()}
    loaded = backend.load(spec(path, fmt, tmp_path, calibration=[feeds]))
    assert [(i.name, i.dtype, i.shape) for i in loaded.inputs] == [("features", "float32", (2, 8)),
                                                                    ("ids", "int64", (2, 4))]
    assert [(o.name, o.dtype, o.shape) for o in loaded.outputs] == [("output_0", "float32", (2, 3)),
                                                                     ("output_1", "float32", (2, 8))]
    got = loaded.run(feeds)
    with torch.no_grad():
        logits, pooled = model(features, ids)
    np.testing.assert_allclose(got["output_0"], logits.numpy(), rtol=1e-6)
    np.testing.assert_allclose(got["output_1"], pooled.numpy(), rtol=1e-6)


def test_symbolic_batch_without_stored_names_runs_at_two_sizes(backend, tmp_path):
    """A plain torch.export file: the batch dim is None, named after torch's symbol."""
    model, (x,) = zoo.build("tiny_cnn", batch=2)
    path = save(model, (x,), tmp_path / "plain.pt2", "torch_export", ({0: torch.export.Dim("batch")},))
    loaded = backend.load(spec(path, "torch_export", tmp_path))
    (info,) = loaded.inputs
    assert info.shape == (None, 3, 32, 32) and info.dim_names[0] and info.dim_names[1:] == ("", "", "")
    assert loaded.outputs[0].dim_names[0] == info.dim_names[0]
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(loaded.run({"input": x.numpy()})["output_0"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fmt, precision, variant", [
    ("torch_export", "fp32", "eager"), ("torch_export", "fp32", "torchscript"), ("torch_export", "int8", "dynamic"),
    ("torchscript", "int8", "dynamic"),
])
def test_save_then_load_from_artifact(backend, tiny, tmp_path, fmt, precision, variant):
    calibration = [{"input": tiny["x"]}]
    loaded = backend.load(spec(tiny["paths"][fmt], fmt, tmp_path, precision, variant, calibration))
    directory = tmp_path / "artifact"
    directory.mkdir()
    artifact = loaded.save(directory)
    assert sorted(p.name for p in directory.iterdir()) == sorted(artifact.files)
    if variant != "eager":  # processed already: the loader must not freeze or quantize again
        assert (artifact.format, artifact.options) == ("torchscript", {"artifact": "true"})
    again = backend.load(spec(directory / artifact.file_name, artifact.format, tmp_path, artifact.precision,
                              artifact.variant, options=artifact.options))  # no calibration: specs are stored
    assert again.inputs == loaded.inputs and again.outputs == loaded.outputs
    np.testing.assert_allclose(again.run({"input": tiny["x"]})["output_0"],
                               loaded.run({"input": tiny["x"]})["output_0"], atol=1e-6)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_file_is_a_compile_failure(backend, tmp_path, fmt):
    path = tmp_path / f"broken{SUFFIX[fmt]}"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CandidateError) as info:
        backend.load(spec(path, fmt, tmp_path))
    assert info.value.category == "compile" and info.value.detail


def test_unoffered_combinations_are_unavailable(backend, tiny, tmp_path):
    with pytest.raises(CandidateError) as info:
        backend.load(spec(tiny["paths"]["torchscript"], "torchscript", tmp_path, variant="inductor"))
    assert info.value.category == "unavailable"
    with pytest.raises(CandidateError) as info:
        backend.load(spec(tiny["paths"]["torch_export"], "torch_export", tmp_path, precision="fp16"))
    assert info.value.category == "unavailable"


def test_torchscript_without_specs_or_calibration_fails_clearly(backend, tmp_path):
    path = save(ConvOnly().eval(), (torch.randn(1, 3, 8, 8),), tmp_path / "bare.torchscript", "torchscript")
    with pytest.raises(CandidateError, match="no input specs") as info:
        backend.load(spec(path, "torchscript", tmp_path))
    assert info.value.category == "compile"


def test_runtime_errors(backend, tiny, tmp_path):
    loaded = backend.load(spec(tiny["paths"]["torch_export"], "torch_export", tmp_path))
    with pytest.raises(CandidateError, match="missing inputs: input") as info:
        loaded.run({})
    assert info.value.category == "runtime"
    with pytest.raises(CandidateError) as info:
        loaded.run({"input": np.zeros((1, 4, 32, 32), np.float32)})  # wrong channel count
    assert info.value.category == "runtime"
