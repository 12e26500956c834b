"""The IREE backend, real compiler and runtime, on tiny ONNX models made in code; onnxruntime is the reference."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Installed by scripts/setup.sh (the "all" extra): a missing IREE is a failure here, not a skip.
assert importlib.util.find_spec("iree.compiler") and importlib.util.find_spec("iree.runtime"), \
    "iree is not installed: run scripts/setup.sh (pip install 'speedster-run[iree]')"
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from runners.backends.base import LoadSpec  # noqa: E402
from runners.backends.iree import IreeBackend, _cpu_flags, _cuda_devices, _target_flags  # noqa: E402
from runners.backends.iree_demotion import demotion_applied, type_mentions  # noqa: E402
from speedster_run.shared.errors import CandidateError  # noqa: E402
from tests.conftest import mlp_onnx, mystery_onnx, save_onnx  # noqa: E402

RNG = np.random.default_rng(7)
HAS_CUDA = bool(_cuda_devices())


def make_spec(path: Path, workdir: Path, precision: str = "fp32", options: dict | None = None, fmt: str = "onnx",
              device: str = "cpu", threads: int = 1, calibration: list | None = None) -> LoadSpec:
    return LoadSpec(path, fmt, device, precision, "default", options or {}, threads, calibration or [], workdir)


def conv_onnx(path: Path, opset: int = 13) -> Path:
    """Conv + Relu + Reshape + MatMul with a symbolic batch, at an old opset (the backend upgrades it)."""
    weights = {"cw": RNG.standard_normal((8, 3, 3, 3)) * 0.3, "cb": RNG.standard_normal(8),
               "fw": RNG.standard_normal((8 * 8 * 8, 10)) * 0.05}
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), "shape"))
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("Reshape", ["r", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "fw"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], initializers)
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)


def multi_onnx(path: Path) -> Path:
    """Three inputs (one int64) and three outputs, declared in an order that differs from the node order."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Gather", ["a", "idx"], ["rows"], axis=0),
         helper.make_node("Mul", ["a", "b"], ["product"])], "multi",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("rows", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("sum", TensorProto.FLOAT, [4, 3])])
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def ort_outputs(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean(np.abs(got - want)) / np.mean(np.abs(want)))


@pytest.fixture(scope="module")
def backend() -> IreeBackend:
    return IreeBackend()


@pytest.fixture(scope="module")
def mlp_compiled(backend: IreeBackend, tmp_path_factory: pytest.TempPathFactory):
    """One fp32 compile of the MLP, shared by the tests that only run it."""
    tmp = tmp_path_factory.mktemp("mlp")
    path = mlp_onnx(tmp / "mlp.onnx")
    return path, backend.load(make_spec(path, tmp / "work", threads=2))


def test_module_import_does_not_import_iree_or_onnx() -> None:
    code = "import sys, runners.backends.iree; assert not {'onnx', 'iree', 'iree.compiler'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_probe_reports_versions_devices_and_offers(backend: IreeBackend) -> None:
    from importlib import metadata

    availability = backend.probe()
    assert availability.available, availability.reason
    assert availability.versions == {"iree-base-compiler": metadata.version("iree-base-compiler"),
                                     "iree-base-runtime": metadata.version("iree-base-runtime"),
                                     "onnx": onnx.__version__}
    assert availability.devices[0] == "cpu"
    assert any(d.startswith("cuda:") for d in availability.devices) == HAS_CUDA
    offers = {offer.precision: offer for offer in availability.offers}
    assert offers["fp32"].devices == (("cpu", "cuda") if HAS_CUDA else ("cpu",))
    assert all(offer.variant == "default" and offer.formats == ("onnx",) for offer in availability.offers)
    # Lower precisions on the CPU only where it has the instructions for them.
    flags = _cpu_flags()
    assert ("cpu" in getattr(offers.get("fp16"), "devices", ())) == ("avx512_fp16" in flags)
    assert ("cpu" in getattr(offers.get("bf16"), "devices", ())) == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_fp32_matches_onnxruntime_with_a_dynamic_batch(mlp_compiled) -> None:
    path, model = mlp_compiled
    (x_info,), (y_info,) = model.inputs, model.outputs
    assert (x_info.name, x_info.dtype, x_info.shape, x_info.dim_names) == ("x", "float32", (None, 256), ("batch", ""))
    assert (y_info.name, y_info.shape) == ("y", (None, 64))
    for batch in (1, 5):  # one module serves every batch size: IREE keeps the symbolic dim dynamic
        x = RNG.standard_normal((batch, 256)).astype(np.float32)
        got = model.run({"x": x})["y"]
        assert got.shape == (batch, 64) and got.dtype == np.float32
        np.testing.assert_allclose(got, ort_outputs(path, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    assert model.details["dynamic_dims"] == "x[0]=batch"
    assert model.details["hal_device"] == "local-task"
    assert "--iree-llvmcpu-target-cpu=host --iree-opt-level=O3" in model.details["compile_flags"]
    assert model.details["threads"].startswith("2 ")
    assert model.details["source"] == "model" and model.details["function"] == "mlp"


def test_wrong_shapes_and_names_are_runtime_errors(mlp_compiled) -> None:
    _, model = mlp_compiled
    for feeds, expected in (({"x": np.zeros((2, 255), np.float32)}, "shape [2, 255]"),
                            ({"x": np.zeros((2, 256, 1), np.float32)}, "shape [2, 256, 1]"),
                            ({"input": np.zeros((2, 256), np.float32)}, "do not match")):
        with pytest.raises(CandidateError, match=expected.replace("[", r"\[")) as caught:
            model.run(feeds)
        assert caught.value.category == "runtime" and "\n" not in caught.value.message
    # IREE's own check behind ours: a wrong element type.
    with pytest.raises(CandidateError) as caught:
        model.run({"x": np.zeros((2, 256), np.float64)})
    assert caught.value.category == "runtime" and "element type" in caught.value.message


def test_old_opset_conv_is_upgraded_and_matches(backend: IreeBackend, tmp_path: Path) -> None:
    path = conv_onnx(tmp_path / "conv.onnx", opset=13)
    model = backend.load(make_spec(path, tmp_path / "work"))
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], ort_outputs(path, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    assert model.details["opset"] == "13 -> 17"
    assert "iree-preprocessing-convert-conv-to-channels-last" in model.details["compile_flags"]
    assert onnx.load(str(tmp_path / "work" / "model.upgraded.onnx")).opset_import[0].version == 17


def padded_pool_cnn_onnx(path: Path) -> Path:
    """Conv-Relu-MaxPool(3x3, stride 2, padded)-GlobalAveragePool-Flatten-Gemm with a symbolic batch, as torch exports
    a ResNet stem: with the channels-last rewriting, IREE fails to compile the padded pool on a dynamic batch."""
    weights = {"w": RNG.standard_normal((8, 3, 3, 3)) * 0.3, "b": RNG.standard_normal(8),
               "fc": RNG.standard_normal((10, 8)) * 0.3, "fb": RNG.standard_normal(10)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "pool_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_dynamic_batch_that_fails_to_compile_is_specialised_to_the_samples(backend: IreeBackend,
                                                                          tmp_path: Path) -> None:
    path = padded_pool_cnn_onnx(tmp_path / "cnn.onnx")
    x = RNG.standard_normal((2, 3, 16, 16)).astype(np.float32)
    model = backend.load(make_spec(path, tmp_path / "work", calibration=[{"x": x}]))
    assert model.details["shapes"].startswith("specialised to x=2x3x16x16 (iree-compile failed on the dynamic dims "
                                              "x[0]=batch: ")
    assert "tensor.empty" in model.details["shapes"] and model.details["dynamic_dims"] == "none (specialised)"
    assert [(t.shape, t.dim_names[0]) for t in model.inputs + model.outputs] == [((2, 3, 16, 16), "batch"),
                                                                                ((2, 10), "batch")]
    np.testing.assert_allclose(model.run({"x": x})["y"], ort_outputs(path, {"x": x})["y"], rtol=1e-4, atol=1e-4)
    with pytest.raises(CandidateError, match=r"shape \[3, 3, 16, 16\].*compiled for those dims"):
        model.run({"x": RNG.standard_normal((3, 3, 16, 16)).astype(np.float32)})


def test_dynamic_batch_without_samples_says_why_it_was_not_specialised(backend: IreeBackend,
                                                                       tmp_path: Path) -> None:
    with pytest.raises(CandidateError, match="no calibration sample to specialise them to") as caught:
        backend.load(make_spec(padded_pool_cnn_onnx(tmp_path / "cnn.onnx"), tmp_path / "work"))
    assert caught.value.category == "compile" and "tensor.empty" in caught.value.message


def test_several_inputs_and_outputs_keep_their_names(backend: IreeBackend, tmp_path: Path) -> None:
    path = multi_onnx(tmp_path / "multi.onnx")
    model = backend.load(make_spec(path, tmp_path / "work"))
    assert [(t.name, t.dtype, t.shape) for t in model.inputs] == [
        ("a", "float32", (4, 3)), ("b", "float32", (4, 3)), ("idx", "int64", (2,))]
    assert [t.name for t in model.outputs] == ["product", "rows", "sum"]
    feeds = {"b": RNG.normal(size=(4, 3)).astype(np.float32), "a": RNG.normal(size=(4, 3)).astype(np.float32),
             "idx": np.array([3, 0], dtype=np.int64)}
    out = model.run(feeds)
    assert list(out) == ["product", "rows", "sum"]
    for name, want in ort_outputs(path, feeds).items():
        np.testing.assert_allclose(out[name], want, rtol=1e-6, atol=1e-6)
    assert model.details["dynamic_dims"] == "none"


def conv_only_onnx(path: Path) -> Path:
    """One 3x3 convolution + Relu at batch 1: IREE folds the unit batch and rewrites it channels-last, leaving a
    generic op that its contraction demotion does not touch."""
    weight = numpy_helper.from_array((RNG.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv_only", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [weight])
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def conv_fp32(backend: IreeBackend, tmp_path_factory: pytest.TempPathFactory):
    """The Conv + MatMul model compiled as fp32: the reference the demoted variants must differ from."""
    tmp = tmp_path_factory.mktemp("conv")
    path = conv_onnx(tmp / "conv.onnx", opset=17)
    return path, backend.load(make_spec(path, tmp / "work"))


@pytest.mark.parametrize("precision,tolerance", [("fp16", 1e-2), ("bf16", 3e-2)])
def test_demoted_contractions_stay_within_tolerance(backend: IreeBackend, conv_fp32, tmp_path: Path, precision: str,
                                                    tolerance: float) -> None:
    path, fp32 = conv_fp32
    model = backend.load(make_spec(path, tmp_path / "work", precision))
    assert [(t.dtype) for t in model.inputs + model.outputs] == ["float32", "float32"]  # f32 I/O
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    got, want = model.run({"x": x})["y"], ort_outputs(path, {"x": x})["y"]
    assert relative_error(got, want) < tolerance
    # The label is true: the program differs from IREE's own fp32 one, by more than fp32 rounding would.
    assert relative_error(got, fp32.run({"x": x})["y"]) > 1e-5
    kind = "f16" if precision == "fp16" else "bf16"
    assert f"--iree-global-opt-demote-contraction-inputs-type={kind}" in model.details["compile_flags"]
    assert model.details["demotion_check"].endswith(f"of {kind} in the program after global-optimization")
    assert int(model.details["demotion_check"].split()[0]) > 0


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_demotion_that_changes_nothing_is_unavailable(backend: IreeBackend, tmp_path: Path, precision: str) -> None:
    path = conv_only_onnx(tmp_path / "conv_only.onnx")
    with pytest.raises(CandidateError, match="changed nothing for this model") as caught:
        backend.load(make_spec(path, tmp_path / "work", precision))
    assert caught.value.category == "unavailable"
    assert "would run as fp32" in caught.value.message


def test_demoted_type_is_told_apart_from_longer_names() -> None:
    ir = ('%0 = arith.truncf %in : f32 to f16\n%1 = tensor.empty() : tensor<4x8xbf16>, tensor<?xf16>\n'
          '#target = {cpu_features = "+f16c,+avx512fp16,+amx-bf16"}\n%2 : !torch.vtensor<[1,4],f16>')
    # truncf's result, tensor<?xf16> and the torch tensor; not bf16, +f16c or +avx512fp16
    assert type_mentions(ir, "f16") == 3
    assert type_mentions(ir, "bf16") == 1  # the tensor; not the +amx-bf16 feature
    assert demotion_applied("", ir, "bf16") and not demotion_applied(ir, ir, "f16")


def test_saved_vmfb_reloads_without_compiling(backend: IreeBackend, mlp_compiled, tmp_path: Path) -> None:
    _, model = mlp_compiled
    x = RNG.standard_normal((3, 256)).astype(np.float32)
    want = model.run({"x": x})["y"]
    out = tmp_path / "saved"
    out.mkdir()
    artifact = model.save(out)
    assert (artifact.format, artifact.file_name, artifact.precision, artifact.variant) == (
        "iree_vmfb", "model.vmfb", "fp32", "default")
    assert artifact.options == {"artifact": "true"}
    assert sorted(p.name for p in out.iterdir()) == sorted(artifact.files) == ["model.json", "model.vmfb"]
    again = backend.load(make_spec(out / artifact.file_name, tmp_path / "work2", artifact.precision,
                                   artifact.options, artifact.format))
    np.testing.assert_array_equal(again.run({"x": x})["y"], want)
    assert again.details["source"] == "artifact"
    assert [t.dim_names for t in again.inputs] == [("batch", "")]
    assert not (tmp_path / "work2").exists()  # nothing imported or compiled


def test_artifact_without_its_sidecar_fails_clearly(backend: IreeBackend, mlp_compiled, tmp_path: Path) -> None:
    _, model = mlp_compiled
    model.save(tmp_path)
    (tmp_path / "model.json").unlink()
    with pytest.raises(CandidateError, match="model.json is missing") as caught:
        backend.load(make_spec(tmp_path / "model.vmfb", tmp_path / "w", options={"artifact": "true"},
                               fmt="iree_vmfb"))
    assert caught.value.category == "compile"


def test_corrupt_model_fails_to_compile(backend: IreeBackend, tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf model" * 10)
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(path, tmp_path / "work"))
    assert caught.value.category == "compile"
    assert "\n" not in caught.value.message and caught.value.detail


def test_unknown_operator_fails_to_compile_with_the_compilers_words(backend: IreeBackend, tmp_path: Path) -> None:
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(mystery_onnx(tmp_path / "mystery.onnx"), tmp_path / "work"))
    assert caught.value.category == "compile"
    assert caught.value.message.startswith("iree-compile failed: ONNX operator Mystery is not supported by IREE")
    assert "Mystery" in caught.value.detail


def test_invalid_graph_fails_in_the_importer_with_its_reason(backend: IreeBackend, tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Add", ["x", "undefined"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "bad.onnx")
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(path, tmp_path / "work"))
    assert caught.value.category == "compile"
    assert caught.value.message.startswith("iree-import-onnx failed: ") and "'undefined'" in caught.value.message
    assert "\n" not in caught.value.message and "Traceback" in caught.value.detail


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPU cores: IREE caps workers at one per core")
def test_threads_set_the_worker_count(backend: IreeBackend, mlp_compiled, tmp_path: Path) -> None:
    _, model = mlp_compiled
    artifact = model.save(tmp_path)  # reloading the .vmfb: only the device, and its workers, differ below
    added = []
    for threads in (1, 2):
        spec = make_spec(tmp_path / artifact.file_name, tmp_path / "w", options=artifact.options,
                         fmt=artifact.format, threads=threads)
        before = len(os.listdir("/proc/self/task"))
        reloaded = backend.load(spec)
        added.append(len(os.listdir("/proc/self/task")) - before)
        assert reloaded.details["threads"] == f"{threads} (--task_topology_max_group_count)"
    assert added[1] == added[0] + 1  # one more worker thread


def test_unsupported_requests_are_unavailable(backend: IreeBackend, tmp_path: Path) -> None:
    path = tmp_path / "never-read.onnx"
    requests = [make_spec(path, tmp_path, "int8"), make_spec(path, tmp_path, fmt="torchscript"),
                make_spec(path, tmp_path, device="gpu:0"), make_spec(path, tmp_path, fmt="iree_vmfb")]
    variant = make_spec(path, tmp_path)
    variant.variant = "static"
    for spec in [*requests, variant]:
        with pytest.raises(CandidateError) as caught:
            backend.load(spec)
        assert caught.value.category == "unavailable", spec


@pytest.mark.skipif(HAS_CUDA, reason="checks the failure where no CUDA GPU is present")
def test_cuda_without_a_gpu_is_unavailable(backend: IreeBackend, tmp_path: Path) -> None:
    path = mlp_onnx(tmp_path / "mlp.onnx", inputs=8, outputs=4)
    with pytest.raises(CandidateError) as caught:
        backend.load(make_spec(path, tmp_path / "work", device="cuda:0"))
    assert caught.value.category == "unavailable"
    assert "'cuda:0'" in caught.value.message
    assert not (tmp_path / "work").exists()  # refused before any import or compile


def test_compile_options_reach_the_compiler(backend: IreeBackend, tmp_path: Path) -> None:
    path = mlp_onnx(tmp_path / "mlp.onnx", inputs=8, outputs=4)
    options = {"opt_level": "O1", "channels_last": "false", "compile_flags": "--iree-opt-data-tiling=false"}
    model = backend.load(make_spec(path, tmp_path / "work", options=options))
    flags = model.details["compile_flags"]
    assert "--iree-opt-level=O1" in flags and "--iree-opt-data-tiling=false" in flags and "channels-last" not in flags
    with pytest.raises(CandidateError, match="opt_level 'O9'") as caught:
        backend.load(make_spec(path, tmp_path / "work2", options={"opt_level": "O9"}))
    assert caught.value.category == "compile"
    with pytest.raises(CandidateError, match="iree-compile failed") as caught:
        backend.load(make_spec(path, tmp_path / "work3", options={"compile_flags": "--no-such-iree-flag"}))
    assert caught.value.category == "compile" and "no-such-iree-flag" in caught.value.detail


def test_target_flags() -> None:
    cpu = make_spec(Path("m.onnx"), Path("w"))
    assert _target_flags(cpu) == ["--iree-hal-target-device=local", "--iree-hal-local-target-device-backends=llvm-cpu",
                                  "--iree-llvmcpu-target-cpu=host"]
    cpu.options = {"target_cpu": "znver4"}
    assert _target_flags(cpu)[-1] == "--iree-llvmcpu-target-cpu=znver4"
    gpu = make_spec(Path("m.onnx"), Path("w"), device="cuda:1", options={"cuda_target": "sm_90"})
    assert _target_flags(gpu) == ["--iree-hal-target-device=cuda", "--iree-cuda-target=sm_90"]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (IREE's cuda driver found none)")
def test_cuda_fp32_matches_onnxruntime(backend: IreeBackend, tmp_path: Path) -> None:
    path = conv_onnx(tmp_path / "conv.onnx", opset=17)
    model = backend.load(make_spec(path, tmp_path / "work", device="cuda:0"))
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(model.run({"x": x})["y"], ort_outputs(path, {"x": x})["y"], rtol=1e-3, atol=1e-3)
    assert model.details["hal_device"] == "cuda:0"
    assert "--iree-hal-target-device=cuda" in model.details["compile_flags"]
