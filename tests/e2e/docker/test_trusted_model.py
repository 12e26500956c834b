"""--trust-model end to end with the Docker sandbox: the torch file is opened only in the torch runner's container.
A crafted archive whose payload would create a marker runs there (the run proceeds, the marker never appears on this
machine), and an ordinary archive gives the same rows as the run that opens it here."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.crafted_archives import craft_example_inputs, save_small_model
from tests.docker_support import require_images


@pytest.fixture(scope="module")
def images(docker_engine):
    return require_images(docker_engine, "torch", "onnxruntime")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # readable by the containers' user, as a user's directory usually is
    return tmp_path


def run(model: Path, report: Path, *extra: str) -> int:
    return main(["--model", str(model), "--sandbox", "docker", "--backends", "onnxruntime", "--iterations", "20",
                 "--rounds", "1", "--report", str(report), *extra])


def rows(report: Path) -> list[tuple]:
    data = json.loads(report.read_text())
    return [(c["name"], c["status"], (c["failure"] or {}).get("category"),
             round((c["comparison"] or {}).get("max_abs_err", -1.0), 6)) for c in data["candidates"]]


def test_a_crafted_archive_with_trust_runs_in_the_container_only(images, model_dir, capsys, monkeypatch):
    import orchestrator.torch_artifacts as torch_artifacts

    # /tmp exists both here and in the container (its own tmpfs): the payload can create the marker wherever it runs.
    marker = Path("/tmp") / f"speedster-trusted-{uuid.uuid4().hex}"
    small = save_small_model(model_dir / "small.pt2")
    evil = craft_example_inputs(small, model_dir / "evil.pt2", marker, usable=True)
    evil.chmod(0o644)
    assert run(evil, model_dir / "refused.json") == 2  # without trust: refused here, before anything starts
    assert "payload data/sample_inputs/model.pt needs the global eval" in capsys.readouterr().err
    def never(*args, **kwargs):
        raise AssertionError("the orchestrator opened the torch file")

    monkeypatch.setattr(torch_artifacts, "_load", never)  # where this process opens torch files
    assert run(evil, model_dir / "report.json", "--trust-model") == 0, capsys.readouterr().err
    assert not marker.exists()
    report = json.loads((model_dir / "report.json").read_text())
    assert report["source"]["exported_onnx"] and report["winner"]
    assert report["config"]["trust_model"] is True
    assert {c["name"]: c["status"] for c in report["candidates"]}["onnxruntime/fp32"] == "ok"


def test_load_model_with_trust_opens_a_saved_torch_artifact_in_the_container(images, model_dir):
    import speedster
    import torch

    from orchestrator.loader import SavedModelError
    from tests.e2e.cli.test_untrusted_archives import saved_directory

    marker = Path("/tmp") / f"speedster-trusted-{uuid.uuid4().hex}"
    small = save_small_model(model_dir / "small.pt2")
    evil = craft_example_inputs(small, model_dir / "evil.pt2", marker, usable=True)
    directory = saved_directory(evil, model_dir / "saved")
    for path in [directory, *directory.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    with pytest.raises(SavedModelError, match="needs the global eval"):
        speedster.load_model(directory)
    model = speedster.load_model(directory, trust_model=True, sandbox="docker")
    try:
        assert model.execution == "torch runner (docker sandbox)"
        x = torch.randn(2, 4)
        torch.testing.assert_close(model(x), torch.export.load(str(small)).module()(x))
    finally:
        model.close()
    assert not marker.exists()


def test_an_ordinary_archive_gives_the_same_rows_with_and_without_trust(images, model_dir, capsys):
    small = save_small_model(model_dir / "small.pt2")
    small.chmod(0o644)
    assert run(small, model_dir / "here.json") == 0, capsys.readouterr().err
    assert run(small, model_dir / "trusted.json", "--trust-model") == 0, capsys.readouterr().err
    here, trusted = (json.loads((model_dir / name).read_text()) for name in ("here.json", "trusted.json"))
    assert rows(model_dir / "here.json") == rows(model_dir / "trusted.json")
    assert here["winner"] == trusted["winner"]
    assert here["source"]["inputs"] == trusted["source"]["inputs"]
    assert here["source"]["outputs"] == trusted["source"]["outputs"]
