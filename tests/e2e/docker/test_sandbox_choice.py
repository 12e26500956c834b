"""--sandbox auto picks Docker per backend where its image exists and says so; --sandbox docker refuses, in one line,
what it cannot do."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.docker

FAST = ["--samples", "2", "--time-budget", "0.3", "--rounds", "1", "--warmup", "1"]


def test_auto_runs_backends_with_an_image_in_docker_and_the_rest_locally(docker_engine, runner_images,
                                                                         readable_model, fake_backend_env, capsys):
    fake_backend_env("ok")  # registered here, but no image exists for "fake"
    report_path = readable_model.parent / "report.json"
    code = main(["--model", str(readable_model), "--backends", "onnxruntime,fake", "--report", str(report_path),
                 *FAST])  # auto is the default
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["config"]["sandbox"] == "auto"
    assert report["environment"]["runner_sandboxes"] == {"onnxruntime": "docker", "fake": "local"}
    assert f"starting the onnxruntime runner (docker: {runner_images['onnxruntime']})" in err
    assert "starting the fake runner (local: no image for fake" in err
    rows = {row["name"]: row for row in report["candidates"]}
    assert rows["onnxruntime/fp32"]["image"] == runner_images["onnxruntime"]
    assert rows["fake/fp32-ok"]["status"] == "ok" and rows["fake/fp32-ok"]["image"] == ""
    assert rows["fake/fp32-ok"]["runner_description"].startswith("local process")


def test_auto_without_an_engine_runs_everything_locally(readable_model, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    code = main(["--model", str(readable_model), "--backends", "onnxruntime", "--sandbox", "auto", *FAST])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "starting the onnxruntime runner (local: Docker engine not reachable" in err


def test_docker_without_an_engine_is_a_user_error(readable_model, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    code = main(["--model", str(readable_model), "--backends", "onnxruntime", "--sandbox", "docker", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("speedster-run: error: Docker engine not reachable: start dockerd or use --sandbox local")


def test_docker_with_a_missing_image_is_a_user_error(docker_engine, readable_model, fake_backend_env, capsys):
    fake_backend_env("ok")
    code = main(["--model", str(readable_model), "--backends", "fake", "--sandbox", "docker", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "no image for fake" in err[0] and "speedster-run images build fake" in err[0]


def test_docker_reports_a_backend_it_was_not_asked_for_and_has_no_image_for_as_unavailable(
        docker_engine, runner_images, readable_model, fake_backend_env, capsys):
    from runners import registry

    fake_backend_env("ok")  # registered, not named with --backends, no image: a row, not the end of the run
    others = [name for name in registry.names() if name not in ("onnxruntime", "fake")]
    report_path = readable_model.parent / "report.json"
    code = main(["--model", str(readable_model), "--sandbox", "docker", "--ignore-backends", ",".join(others),
                 "--report", str(report_path), *FAST])
    assert code == 0, capsys.readouterr().err
    rows = {row["name"]: row for row in json.loads(report_path.read_text())["candidates"]}
    assert rows["onnxruntime/fp32"]["status"] == "ok"
    assert rows["fake"]["failure"]["category"] == "unavailable"
    assert "no image for fake" in rows["fake"]["failure"]["message"]
