"""Saved directories are plain data, checked before anything loads: every malformed manifest.json or speedster.json,
every file name that leaves the directory (`..`, an absolute path, a symlink out), every file_name that is not one
of the sha256-checked files is a SavedModelError with one line, never a KeyError, AttributeError or protocol error.
A real ONNX Runtime load in this process shows the well-formed directory loads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import speedster
from orchestrator.config import RunConfig
from orchestrator.loader import SavedModelError, load_saved, read_manifest
from tests.conftest import mlp_onnx


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_for(directory: Path, name: str = "mlp.onnx") -> dict:
    return {"manifest_version": 1, "backend": "onnxruntime", "format": "onnx", "file_name": name,
            "precision": "fp32", "variant": "default", "options": {"graph_optimization_level": "all"},
            "device": "cpu", "threads": 1, "files": {name: sha256(directory / name)}}


META = {"api_version": 1, "input_names": ["x"], "input_dtypes": {"x": "float32"}, "input_shapes": {"x": [1, 256]},
        "dynamic_axes": {"x": {"0": {"name": "batch", "min": 1, "opt": 1, "max": 8}}},
        "output_structure": {"leaf": 0}, "framework": "onnx", "device": "cpu", "torch_device": "cpu"}


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    directory = tmp_path / "saved"
    directory.mkdir()
    mlp_onnx(directory / "mlp.onnx")
    (directory / "manifest.json").write_text(json.dumps(manifest_for(directory)))
    (directory / "speedster.json").write_text(json.dumps(META))
    return directory


def test_a_well_formed_directory_loads_and_runs(saved):
    model = load_saved(saved)
    assert next(iter(model({"x": np.ones((1, 256), np.float32)}).values())).shape == (1, 64)
    model.close()
    optimized = speedster.load_model(saved, execution="in-process")
    assert tuple(optimized(np.ones((2, 256), np.float32)).shape) == (2, 64)
    optimized.close()


def _set(**changes):
    return lambda m: {**m, **changes}


def _drop(key):
    return lambda m: {k: v for k, v in m.items() if k != key}


def _add_file(name):
    return lambda m: {**m, "files": {**m["files"], name: "0" * 64}}


MANIFESTS = {  # case -> (the manifest -> a malformed one, what the error says)
    "a list": (lambda m: [m], "not a manifest (a JSON object), but a list"),
    "a string": (lambda m: "mlp.onnx", "not a manifest (a JSON object), but a str"),
    "null": (lambda m: None, "not a manifest (a JSON object), but a NoneType"),
    **{f"no {key}": (_drop(key), f"the manifest has no {key!r}")
       for key in ("backend", "format", "file_name", "precision", "variant", "files")},
    "backend a number": (_set(backend=7), "'backend' is a int, expected a str"),
    "files a list": (_set(files=["mlp.onnx"]), "'files' is a list, expected a dict"),
    "files empty": (_set(files={}), "'files' must map each file name to its sha256"),
    "digest a number": (_set(files={"mlp.onnx": 5}), "'files' must map each file name to its sha256"),
    "options a list": (_set(options=[]), "'options' is a list, expected a dict"),
    "option a number": (_set(options={"graph_optimization_level": 1}), "'options' must map names to strings"),
    "threads a string": (_set(threads="2"), "'threads' is a str, expected a int"),
    "threads a bool": (_set(threads=True), "'threads' is a bool, expected a int"),
    "threads negative": (_set(threads=-1), "'threads' must be 0 or more"),
    "device a number": (_set(device=0), "'device' is a int, expected a str"),
    "file_name not listed": (_set(file_name="other.onnx"), "is not among the sha256-checked 'files'"),
    "file_name upwards": (lambda m: {**m, "file_name": "../saved/mlp.onnx",
                                     "files": {"../saved/mlp.onnx": m["files"]["mlp.onnx"]}},
                          "must be relative and stay inside the directory"),
    "file absolute": (_add_file("/etc/hostname"), "must be relative and stay inside the directory"),
    "file upwards": (_add_file("../secret"), "must be relative and stay inside the directory"),
    "file_name a number": (_set(file_name=1), "'file_name' is a int, expected a str"),
    "trust granted by the manifest": (lambda m: {**m, "options": {"trust_model": "true"}},
                                      "option 'trust_model' is not accepted from a saved manifest"),
    "unknown backend": (_set(backend="nonexistent"), "unknown backend 'nonexistent'"),
}


@pytest.mark.parametrize("case", MANIFESTS)
def test_a_malformed_manifest_is_one_line(saved, case):
    change, message = MANIFESTS[case]
    (saved / "manifest.json").write_text(json.dumps(change(manifest_for(saved))))
    for load in (load_saved, lambda d: speedster.load_model(d, execution="in-process")):
        with pytest.raises(SavedModelError) as info:
            load(saved)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_a_manifest_that_is_not_json_is_one_line(saved):
    (saved / "manifest.json").write_text("{not json")
    with pytest.raises(SavedModelError, match="not a readable manifest"):
        read_manifest(saved)


def test_a_listed_file_that_is_a_symlink_out_is_refused(saved, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(saved / "mlp.onnx", outside)
    (saved / "mlp.onnx").unlink()
    os.symlink(outside, saved / "mlp.onnx")  # same bytes, same sha256: only the link gives it away
    (saved / "manifest.json").write_text(json.dumps(manifest_for(saved)))
    with pytest.raises(SavedModelError, match="mlp.onnx is a symlink .* that leads outside the directory"):
        load_saved(saved)


def test_a_directory_symlink_out_is_refused(saved, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(saved / "mlp.onnx", elsewhere / "mlp.onnx")
    os.symlink(elsewhere, saved / "sub")
    manifest = manifest_for(saved) | {"file_name": "sub/mlp.onnx",
                                      "files": {"sub/mlp.onnx": sha256(elsewhere / "mlp.onnx")}}
    (saved / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SavedModelError, match="sub/mlp.onnx is a symlink .* that leads outside the directory"):
        load_saved(saved)


def test_a_manifest_that_is_a_symlink_out_is_refused(saved, tmp_path):
    outside = tmp_path / "manifest.json"
    outside.write_text(json.dumps(manifest_for(saved)))
    (saved / "manifest.json").unlink()
    os.symlink(outside, saved / "manifest.json")
    with pytest.raises(SavedModelError, match="manifest.json is a symlink"):
        read_manifest(saved)


def test_onnx_external_data_must_be_a_listed_file(saved):
    import onnx

    model = onnx.load(str(saved / "mlp.onnx"))
    onnx.save(model, str(saved / "mlp.onnx"), save_as_external_data=True, location="mlp.data", size_threshold=0)
    (saved / "manifest.json").write_text(json.dumps(manifest_for(saved)))  # lists mlp.onnx only
    with pytest.raises(SavedModelError, match="external data mlp.data of mlp.onnx is not among the sha256-checked"):
        load_saved(saved)
    manifest = manifest_for(saved)
    manifest["files"]["mlp.data"] = sha256(saved / "mlp.data")
    (saved / "manifest.json").write_text(json.dumps(manifest))
    load_saved(saved).close()


AXIS = META["dynamic_axes"]["x"]["0"]
METAS = {  # case -> (speedster.json -> a malformed one, what the error says)
    "a list": (lambda m: [m], "not a model saved by save_model (a JSON object), but a list"),
    "another version": (_set(api_version=2), "saved with format 2"),
    **{f"no {key}": (_drop(key), f"{key!r} is missing")
       for key in ("input_names", "input_dtypes", "input_shapes", "dynamic_axes", "output_structure", "framework",
                   "device")},
    "input names a string": (_set(input_names="x"), "'input_names' is missing or not a list"),
    "no shape for an input": (_set(input_shapes={}), "'input_shapes' has no list of sizes for input"),
    "a dtype numpy does not know": (_set(input_dtypes={"x": "floaty"}), "floaty"),
    "axes of another input": (_set(dynamic_axes={"y": {"0": AXIS}}),
                              "'dynamic_axes' names an axis that input 'y' does not have"),
    "axis not a number": (_set(dynamic_axes={"x": {"first": AXIS}}), "invalid literal"),
    "axis range a string": (_set(dynamic_axes={"x": {"0": {**AXIS, "min": "1"}}}), "are not named integer ranges"),
    "structure without items": (_set(output_structure={"keys": ["a"]}), "without 'items'"),
    "structure of another kind": (_set(output_structure={"items": [], "sequence": "set"}),
                                  "neither a list nor a tuple"),
    "an output class outside transformers": (
        _set(output_structure={"keys": ["a"], "items": [{"leaf": 0}], "class": "os:system"}),
        "is not from an allowed library"),
    "an output class that is not a ModelOutput": (
        _set(output_structure={"keys": ["a"], "items": [{"leaf": 0}],
                               "class": "transformers.configuration_utils:PretrainedConfig"}),
        "is not a transformers ModelOutput"),
}


@pytest.mark.parametrize("case", METAS)
def test_a_malformed_speedster_json_is_one_line(saved, case):
    change, message = METAS[case]
    (saved / "speedster.json").write_text(json.dumps(change(META)))
    with pytest.raises(SavedModelError) as info:
        speedster.load_model(saved, execution="in-process")
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_trust_is_granted_by_the_run_only_and_only_to_a_contained_runner():
    options = {"torch": {"trust_model": "true", "k": "v"}}
    assert RunConfig(model=Path("m.pt2"), backend_options=options).load_options("torch", "eager", True) == {"k": "v"}
    trusted = RunConfig(model=Path("m.pt2"), backend_options=options, trust_model=True)
    assert trusted.load_options("torch", "eager", contained=False) == {"k": "v"}
    assert trusted.load_options("torch", "eager", contained=True) == {"k": "v", "trust_model": "true"}
    assert trusted.load_options("xla", "eager", contained=True) == {}  # it would save the option with its artifact
