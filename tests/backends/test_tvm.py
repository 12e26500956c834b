"""TvmBackend against real Apache TVM (Relax, LLVM) on tiny models built here; CUDA tests run only where a GPU is."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tvm  # noqa: E402,F401  installed by scripts/setup.sh (the "all" extra): a missing TVM fails, not skips

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from runners.backends.base import LoadSpec  # noqa: E402
from runners.backends.tvm import ARTIFACT_FORMAT, TvmBackend, cpu_target_config, host_mcpu  # noqa: E402
from speedster_run.shared.errors import CandidateError  # noqa: E402
from tests.conftest import mlp_onnx, save_onnx  # noqa: E402

RNG = np.random.default_rng(0)
HAS_CUDA = tvm.cuda(0).exist


def make_spec(model_path: Path, workdir: Path, variant: str = "default", options: dict[str, str] | None = None,
              precision: str = "fp32", fmt: str = "onnx", device: str = "cpu") -> LoadSpec:
    """One thread: the test machine has two shared cores."""
    return LoadSpec(model_path=model_path, format=fmt, device=device, precision=precision, variant=variant,
                    options=options or {}, threads=1, calibration=[], workdir=workdir)


def conv_onnx(path: Path) -> Path:
    """x[batch,3,8,8] -> Conv(3->8, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y[batch,4]."""
    weights = {"w": RNG.normal(0, 0.3, (8, 3, 3, 3)), "b": RNG.normal(0, 0.1, (8,)),
               "fc": RNG.normal(0, 0.3, (4, 8)), "fb": RNG.normal(0, 0.1, (4,))}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def backend() -> TvmBackend:
    return TvmBackend()


def test_module_import_does_not_import_tvm() -> None:
    code = "import sys, runners.backends.tvm; assert not {'tvm', 'tvm_ffi', 'onnx'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_probe_reports_versions_devices_and_offers(backend: TvmBackend) -> None:
    availability = backend.probe()
    assert availability.available, availability.reason
    assert availability.versions["apache-tvm"] == tvm.__version__
    assert availability.versions["llvm"].isdigit()
    assert availability.devices[0] == "cpu" and (len(availability.devices) > 1) == HAS_CUDA
    modes = {(o.precision, o.variant): o for o in availability.offers}
    assert set(modes) == {("fp32", "default"), ("fp32", "tuned")}  # fp16/int8 are not offered on CPU
    assert modes[("fp32", "default")].formats == ("onnx", "torch_export")


@pytest.mark.parametrize("flags,vendor,mcpu", [
    ("avx2 fma bmi2 movbe avx512f avx512bw avx512vl avx512dq avx512cd avx512_vnni avx512_bf16 avx512_vbmi2 "
     "avx512_bitalg amx_tile amx_bf16 amx_int8 avx512_fp16", "GenuineIntel", "sapphirerapids"),
    ("avx2 fma bmi2 movbe avx512f avx512bw avx512vl avx512dq avx512cd avx512_vnni", "GenuineIntel", "cascadelake"),
    ("avx2 fma bmi2 movbe avx512f avx512bw avx512vl avx512dq avx512cd", "GenuineIntel", "skylake-avx512"),
    ("avx2 fma bmi2 movbe avx512f avx512bw avx512vl avx512dq avx512cd avx512_vnni avx512_bf16", "AuthenticAMD",
     "znver4"),
    ("avx2 fma bmi2 movbe sse4_2 popcnt ssse3", "AuthenticAMD", "x86-64-v3"),
    ("sse4_2 popcnt ssse3", "GenuineIntel", "x86-64-v2"),
    ("fp asimd", "", None),
])
def test_host_mcpu_maps_cpu_flags(flags: str, vendor: str, mcpu: str | None) -> None:
    assert host_mcpu(set(flags.split()), vendor) == mcpu


def test_target_uses_a_valid_mcpu_and_falls_back(tmp_path: Path) -> None:
    from tvm.target import codegen

    spec = make_spec(tmp_path / "m.onnx", tmp_path)
    config = cpu_target_config(spec)
    assert config["num-cores"] == 1
    assert "mcpu" not in config or codegen.llvm_is_valid_cpu(config["mcpu"], codegen.llvm_get_system_triple())
    spec.options = {"mcpu": "no-such-cpu"}  # TVM would only warn and use generic: the fallback chain decides
    assert cpu_target_config(spec)["mcpu"] == "x86-64-v4"
    spec.options = {"mcpu": "skylake-avx512"}
    assert cpu_target_config(spec)["mcpu"] == "skylake-avx512"


@pytest.mark.parametrize("model", ["mlp", "conv"])
def test_fp32_default_matches_onnxruntime(backend: TvmBackend, tmp_path: Path, model: str) -> None:
    path = mlp_onnx(tmp_path / "m.onnx") if model == "mlp" else conv_onnx(tmp_path / "m.onnx")
    loaded = backend.load(make_spec(path, tmp_path / "work"))
    x = RNG.standard_normal((2, 256) if model == "mlp" else (2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})["y"], ort_outputs(path, {"x": x})[0], rtol=1e-4, atol=1e-4)
    assert loaded.details["tuning"] == "none" and loaded.details["threads"] == "1"
    assert '"kind":"llvm"' in loaded.details["target"]


# The real architectures the onnx package ships (opset 9 and older, IR 3: every weight is also a graph input, and
# squeezenet's weights are made by ConstantOfShape from initializers). The costliest on 2 cores are marked slow.
ONNX_LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
SLOW_LIGHT_MODELS = {"vgg19", "densenet121", "inception_v2"}
LIGHT_MODELS = [pytest.param(name, marks=[pytest.mark.slow] if name in SLOW_LIGHT_MODELS else [])
                for name in ("squeezenet", "bvlc_alexnet", "zfnet512", "shufflenet", "resnet50", "inception_v1",
                             "inception_v2", "densenet121", "vgg19")]


def with_logits_output(source: Path, target: Path) -> Path:
    """The model with the input of its final Softmax as a second output. Their weights are constants, so every class
    gets the same logit and the softmax is uniform whatever the layers computed; the logits themselves are not."""
    model = onnx.load(str(source))
    last = model.graph.node[-1]
    if last.op_type == "Softmax":
        model.graph.output.append(helper.make_tensor_value_info(last.input[0], TensorProto.FLOAT, None))
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_real_onnx_architectures_compile_and_match_onnxruntime(backend: TvmBackend, tmp_path: Path,
                                                              name: str) -> None:
    path = with_logits_output(ONNX_LIGHT_DIR / f"light_{name}.onnx", tmp_path / f"{name}.onnx")
    loaded = backend.load(make_spec(path, tmp_path / "work"))
    (x_info,) = loaded.inputs  # the weights listed as inputs are not the model's inputs
    assert x_info.shape == (1, 3, 224, 224) and x_info.dtype == "float32"
    x = RNG.standard_normal(x_info.shape).astype(np.float32)
    got = list(loaded.run({x_info.name: x}).values())
    want = ort_outputs(path, {x_info.name: x})
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())))


def test_symbolic_batch_dim_runs_any_batch(backend: TvmBackend, tmp_path: Path) -> None:
    path = conv_onnx(tmp_path / "m.onnx")
    loaded = backend.load(make_spec(path, tmp_path / "work"))
    (x_info,), (y_info,) = loaded.inputs, loaded.outputs
    assert (x_info.shape, x_info.dim_names[0], y_info.shape) == ((None, 3, 8, 8), "batch", (None, 4))
    for batch in (1, 5):
        x = RNG.standard_normal((batch, 3, 8, 8)).astype(np.float32)
        np.testing.assert_allclose(loaded.run({"x": x})["y"], ort_outputs(path, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_wrong_feeds_are_runtime_errors(backend: TvmBackend, tmp_path: Path) -> None:
    loaded = backend.load(make_spec(conv_onnx(tmp_path / "m.onnx"), tmp_path / "work"))
    for feeds in ({"z": np.zeros((1, 3, 8, 8), np.float32)}, {"x": np.zeros((1, 3, 9, 8), np.float32)}):
        with pytest.raises(CandidateError) as caught:
            loaded.run(feeds)
        assert caught.value.category == "runtime" and "\n" not in caught.value.message


def test_torch_export_front_end(backend: TvmBackend, tmp_path: Path) -> None:
    import torch

    from orchestrator import zoo

    path = zoo.save("tiny_cnn", tmp_path / "tiny.pt2", dynamic_batch=True)
    loaded = backend.load(make_spec(path, tmp_path / "work", fmt="torch_export"))
    assert [i.name for i in loaded.inputs] == ["input"] and loaded.inputs[0].shape[0] is None
    model, _ = zoo.build("tiny_cnn")
    x = RNG.standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    (got,) = loaded.run({"input": x}).values()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_saved_artifact_reloads_without_compiling(backend: TvmBackend, tmp_path: Path) -> None:
    path = conv_onnx(tmp_path / "m.onnx")
    loaded = backend.load(make_spec(path, tmp_path / "work"))
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    want = loaded.run({"x": x})["y"]
    out = tmp_path / "saved"
    out.mkdir()
    artifact = loaded.save(out)
    assert (artifact.format, artifact.file_name, artifact.options["artifact"]) == (ARTIFACT_FORMAT, "model.so", "true")
    assert sorted(p.name for p in out.iterdir()) == sorted(artifact.files)
    path.unlink()  # the source model is gone: only the artifact can serve
    again = backend.load(make_spec(out / artifact.file_name, tmp_path / "work2", options=artifact.options,
                                   fmt=artifact.format))
    assert again.details["source"] == "artifact" and "compile_seconds" not in again.details
    assert [(i.name, i.shape) for i in again.inputs] == [(i.name, i.shape) for i in loaded.inputs]
    np.testing.assert_array_equal(again.run({"x": x})["y"], want)
    resaved = tmp_path / "resaved"
    resaved.mkdir()
    again.save(resaved)  # an artifact saves again (copied, not re-exported)
    assert (resaved / "model.so").read_bytes() == (out / "model.so").read_bytes()


def test_tuned_variant_tunes_once_then_uses_the_cache(backend: TvmBackend, tmp_path: Path) -> None:
    path = mlp_onnx(tmp_path / "m.onnx", inputs=32, outputs=16)
    # MetaSchedule tunes static shapes: the symbolic batch is bound to 3. A budget this small ends tuning after the
    # first measured batch, so the budget callback is exercised too.
    options = {"tune_trials": "2", "tune_budget_s": "0.01", "tune_cache": str(tmp_path / "cache"), "dims": "batch=3"}
    first = backend.load(make_spec(path, tmp_path / "work", "tuned", options))
    assert first.details["tuning"] == "tuned" and first.details["stopped_by_budget"] == "true"
    assert int(first.details["tuning_records"]) >= 1
    assert first.details["static_shapes"] == "x=3x32" and first.inputs[0].shape == (3, 32)
    (cache,) = (tmp_path / "cache").iterdir()
    assert (cache / "complete.json").exists() and (cache / "database_tuning_record.json").stat().st_size > 0
    x = RNG.standard_normal((3, 32)).astype(np.float32)
    want = ort_outputs(path, {"x": x})[0]
    np.testing.assert_allclose(first.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)
    start = time.monotonic()
    second = backend.load(make_spec(path, tmp_path / "work2", "tuned", options))
    assert time.monotonic() - start < float(first.details["tuning_seconds"])
    assert second.details["tuning"] == "cached" and second.details["tuning_cache"] == str(cache)
    np.testing.assert_allclose(second.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("options,message", [
    ({"tune_trials": "many", "dims": "batch=1"}, "tune_trials"),
    ({"tune_trials": "0", "dims": "batch=1"}, "tune_trials"),
    ({"dims": "batch"}, "dims"),
    ({}, "static shapes: give sizes for batch"),  # no sizes and no calibration samples to take them from
])
def test_bad_tuning_requests_fail_to_compile(backend: TvmBackend, tmp_path: Path, options: dict[str, str],
                                            message: str) -> None:
    options = {**options, "tune_cache": str(tmp_path / "cache")}
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(mlp_onnx(tmp_path / "m.onnx"), tmp_path / "work", "tuned", options))
    assert caught.value.category == "compile" and message in caught.value.message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_tuning_binds_symbolic_dims_by_name_or_sample(tmp_path: Path) -> None:
    from runners.backends.tvm import _import, _specialize

    pytest.importorskip("torch")
    from orchestrator import zoo

    # torch.export names its symbols (s77...); option dims uses the name the model reports ("batch").
    spec = make_spec(zoo.save("tiny_cnn", tmp_path / "t.pt2", dynamic_batch=True), tmp_path, "tuned",
                     {"dims": "batch=2"}, fmt="torch_export")
    mod, _, inputs, outputs = _import(spec)
    _, static_inputs, static_outputs = _specialize(mod, inputs, outputs, spec)
    assert static_inputs[0].shape == (2, 3, 32, 32) and static_outputs[0].shape == (2, 10)
    spec = make_spec(mlp_onnx(tmp_path / "m.onnx"), tmp_path, "tuned")
    spec.calibration = [{"x": np.zeros((4, 256), np.float32)}]
    mod, _, inputs, outputs = _import(spec)
    _, static_inputs, static_outputs = _specialize(mod, inputs, outputs, spec)
    assert static_inputs[0].shape == (4, 256) and static_outputs[0].shape == (4, 64)


def test_corrupt_model_fails_to_compile(backend: TvmBackend, tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(path, tmp_path / "work"))
    assert caught.value.category == "compile"
    assert "\n" not in caught.value.message and caught.value.detail


def test_unsupported_requests_are_unavailable(backend: TvmBackend, tmp_path: Path) -> None:
    path = mlp_onnx(tmp_path / "m.onnx")
    specs = [make_spec(path, tmp_path, precision="fp16"), make_spec(path, tmp_path, precision="int8"),
             make_spec(path, tmp_path, variant="autotvm"), make_spec(path, tmp_path, device="gpu:0"),
             make_spec(path, tmp_path, fmt="torchscript"), make_spec(path, tmp_path, fmt=ARTIFACT_FORMAT)]
    for spec in specs:
        with pytest.raises(CandidateError) as caught:
            backend.load(spec)
        assert caught.value.category == "unavailable", spec


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU visible to TVM (tvm.cuda(0).exist is False)")
def test_cuda_default_matches_onnxruntime(backend: TvmBackend, tmp_path: Path) -> None:
    path = conv_onnx(tmp_path / "m.onnx")
    loaded = backend.load(make_spec(path, tmp_path / "work", device="cuda:0"))
    assert '"kind":"cuda"' in loaded.details["target"]
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.run({"x": x})["y"], ort_outputs(path, {"x": x})[0], rtol=1e-3, atol=1e-3)
