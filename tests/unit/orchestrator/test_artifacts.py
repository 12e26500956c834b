"""--save: the target is checked before the run, the artifact's stream is written and verified file by file, and the
manifest of a real run's winner describes the files on disk."""

from __future__ import annotations

import hashlib
import json

import pytest

from orchestrator.artifacts import MANIFEST, MANIFEST_VERSION, check_save_dir, write_chunks
from orchestrator.config import RunConfig, TimingConfig
from orchestrator.errors import UserError
from orchestrator.pool import CallFailure
from orchestrator.run import optimize
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.shared.errors import InvalidRequestError
from speedster_run.shared.files import sha256_file


def _chunks(files: dict[str, bytes], size: int = 3, digests: dict[str, str] | None = None) -> list[pb.FileChunk]:
    """The stream a runner sends for these files: small pieces, the last carrying the whole file's sha256."""
    chunks = []
    for name, data in files.items():
        pieces = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            digest = (digests or {}).get(name, hashlib.sha256(data).hexdigest()) if last else ""
            chunks.append(pb.FileChunk(file_name=name, data=piece, last=last, sha256=digest))
    return chunks


def test_check_save_dir_refuses_what_holds_files_and_accepts_new_or_empty_directories(tmp_path):
    check_save_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_save_dir(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept.txt").write_text("the user's")
    with pytest.raises(UserError, match="not an empty directory"):
        check_save_dir(tmp_path / "full")
    (tmp_path / "file").write_text("the user's")
    with pytest.raises(UserError, match="not an empty directory"):
        check_save_dir(tmp_path / "file")
    assert (tmp_path / "full" / "kept.txt").read_text() == "the user's"


def test_write_chunks_writes_every_file_and_returns_their_digests(tmp_path):
    files = {"model.onnx": b"graph bytes of some length", "data/weights.bin": bytes(range(256)) * 3}
    digests = write_chunks(_chunks(files), tmp_path)
    for name, data in files.items():
        assert (tmp_path / name).read_bytes() == data
        assert digests[name] == hashlib.sha256(data).hexdigest() == sha256_file(tmp_path / name)


def test_write_chunks_refuses_a_corrupted_file_and_a_name_outside_the_target(tmp_path):
    corrupted = _chunks({"model.onnx": b"abcdefgh"}, digests={"model.onnx": "0" * 64})
    with pytest.raises(CallFailure) as caught:
        write_chunks(corrupted, tmp_path / "one")
    assert caught.value.category == "runtime" and "corrupted" in caught.value.message
    with pytest.raises(InvalidRequestError, match="must be relative"):
        write_chunks(_chunks({"../escaped.bin": b"x"}), tmp_path / "two")
    assert not (tmp_path / "escaped.bin").exists()


def test_the_winner_is_saved_with_a_manifest_that_describes_the_files(mlp_model, tmp_path):
    target = tmp_path / "saved"
    config = RunConfig(model=mlp_model, backends=("onnxruntime",), samples=2, sandbox="local", save_dir=target,
                       timing=TimingConfig(time_budget_s=0.2, rounds=1, warmup_iterations=1))
    report = optimize(config)
    assert report.winner is not None and not report.save_error
    winner = next(row for row in report.candidates if row.name == report.winner)
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["manifest_version"] == MANIFEST_VERSION
    assert manifest["backend"] == winner.backend and manifest["precision"] == winner.precision
    assert manifest["file_name"] in manifest["files"]
    for name, digest in manifest["files"].items():  # exactly what arrived, verified
        assert sha256_file(target / name) == digest
    assert sorted(p.name for p in target.iterdir()) == sorted(set(manifest["files"]) | {MANIFEST})
    assert manifest["source"]["sha256"] == sha256_file(mlp_model)
    assert manifest["measured"]["median_ms"] == pytest.approx(winner.stats.median_ms)
    assert manifest["inputs"][0]["name"] == "x" and manifest["threads"] == config.effective_threads
