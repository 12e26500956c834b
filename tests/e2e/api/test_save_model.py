"""save_model over a previous save replaces it in one step, as Speedster did; anything else in the way is refused,
untouched; a save that fails half-way leaves the previous one as it was."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from orchestrator.api import save_target
from orchestrator.api.compilers import only
from speedster import load_model, optimize_model, save_model
from tests.conftest import mlp_onnx

RUN = {"sandbox": "local", "measure_s": 0.2, "quiet": True}


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    path = mlp_onnx(tmp_path_factory.mktemp("model") / "mlp.onnx")
    data = [((np.random.default_rng(i).standard_normal((2, 256), dtype=np.float32),),) for i in range(2)]
    model = optimize_model(str(path), data, ignore_compilers=only("onnxruntime"), **RUN)
    assert model is not None
    yield model
    model.close()


def tree(directory) -> dict[str, str]:
    """Every file under directory (relative name -> sha256) and every directory (name -> "dir")."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            found[os.path.relpath(os.path.join(root, name), directory)] = "dir"
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, directory)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def test_a_second_save_replaces_the_first(optimized, tmp_path):
    target = save_model(optimized, tmp_path / "saved")
    manifest = json.loads((target / "manifest.json").read_text())
    stale = dict(manifest, measured={"median_ms": 123.0})  # the first run's numbers: the second save must win
    (target / "manifest.json").write_text(json.dumps(stale))
    before = os.stat(target).st_ino

    assert save_model(optimized, str(target)) == target  # a user's script run twice
    assert os.stat(target).st_ino != before  # a new directory swapped in, not files written into the old one
    assert json.loads((target / "manifest.json").read_text()) == manifest
    assert sorted(tmp_path.iterdir()) == [target]  # nothing left beside it
    x = np.ones((2, 256), np.float32)
    loaded = load_model(target, sandbox="local")
    assert np.allclose(loaded(x)[0], optimized(x)[0], atol=1e-5)
    loaded.close()


def test_a_link_to_a_previous_save_stays_a_link(optimized, tmp_path):
    real = save_model(optimized, tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    save_model(optimized, link)
    assert link.is_symlink() and save_target.holds_exactly_a_save(real, "speedster.json")


@pytest.mark.parametrize("extra", ["notes.txt", "sub/", "no speedster.json"])
def test_a_directory_with_anything_else_is_refused_untouched(optimized, tmp_path, extra):
    target = save_model(optimized, tmp_path / "saved")
    if extra == "notes.txt":
        (target / "notes.txt").write_text("mine")
    elif extra == "sub/":
        (target / "sub").mkdir()
    else:
        (target / "speedster.json").unlink()
    before = tree(target)
    with pytest.raises(FileExistsError, match="neither empty nor a previous save"):
        save_model(optimized, target)
    assert tree(target) == before


def test_a_file_and_other_directories_are_refused(optimized, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"the user's model")
    with pytest.raises(FileExistsError):
        save_model(optimized, tmp_path / "model.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == b"the user's model"
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "manifest.json").write_text('{"files": {}}')  # looks like a save, is not one
    (tmp_path / "project" / "speedster.json").write_text("{}")
    (tmp_path / "project" / "train.py").write_text("print('mine')")
    with pytest.raises(FileExistsError):
        save_model(optimized, tmp_path / "project")
    assert (tmp_path / "project" / "train.py").exists()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError, match="symlink to nothing"):
        save_model(optimized, tmp_path / "dangling")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("failure", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_save_that_fails_half_way_leaves_the_previous_one_intact(optimized, tmp_path, monkeypatch, failure):
    target = save_model(optimized, tmp_path / "saved")
    before = tree(target)
    real_copytree, copied = save_target.shutil.copytree, []

    def copy_then_fail(source, destination, **kwargs):
        if copied:  # the first file arrives, then the disk fills up (or the user presses Ctrl-C)
            raise failure
        copied.append(destination)
        return save_target.shutil.copy2(source, destination, **kwargs)

    monkeypatch.setattr(save_target.shutil, "copytree",
                        lambda source, destination: real_copytree(source, destination, copy_function=copy_then_fail))
    with pytest.raises(type(failure)):
        save_model(optimized, target)
    assert copied and tree(target) == before
    assert sorted(tmp_path.iterdir()) == [target]  # the half-written copy is gone


def test_a_failed_swap_leaves_the_previous_save_intact(optimized, tmp_path, monkeypatch):
    target = save_model(optimized, tmp_path / "saved")
    before = tree(target)

    def refuse(first, second):
        raise OSError("rename refused")

    monkeypatch.setattr(save_target, "exchange", refuse)
    with pytest.raises(OSError, match="rename refused"):
        save_model(optimized, target)
    assert tree(target) == before and sorted(tmp_path.iterdir()) == [target]


def test_the_two_rename_fallback_swaps_too(tmp_path, monkeypatch):
    """Where renameat2 is missing (old C libraries, some filesystems), two renames do the swap."""
    first, second = tmp_path / "new", tmp_path / "old"
    first.mkdir(), second.mkdir()
    (first / "a").write_text("new")
    (second / "a").write_text("old")

    class NoRenameat2:
        renameat2 = None

    monkeypatch.setattr(save_target.ctypes, "CDLL", lambda *args, **kwargs: NoRenameat2())
    save_target.exchange(first, second)
    assert (second / "a").read_text() == "new" and (first / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "old"]
