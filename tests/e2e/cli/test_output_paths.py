"""--report, --save, --inputs and --threads are checked before anything starts: the user's files are never written
over, an unwritable place is one line and exit 2 (not exit 3 after the whole run), a wrong dtype is named."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from orchestrator.cli import main
from tests.conftest import FAST, assert_user_error, cli, mlp_onnx


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    """main() in this process (fast: no interpreter start), as a CompletedProcess for assert_user_error."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def main_as_ordinary_user(*args) -> subprocess.CompletedProcess:
    """main() in a forked child, as uid 65534 when this is root (root writes into a 0555 directory anyway, and a
    fresh interpreter might not be runnable as that user)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            sys.stdout = sys.stderr = os.fdopen(write_end, "w")
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            code = main([str(a) for a in args])
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        output = pipe.read()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(args, os.waitstatus_to_exitcode(status), "", output)


def test_the_report_never_overwrites_the_model_or_an_input_file(mlp_model, tmp_path, capsys):
    inputs = tmp_path / "sample.npz"
    np.savez(inputs, x=np.zeros((1, 256), np.float32))
    (tmp_path / "hard.json").hardlink_to(mlp_model)
    (tmp_path / "soft.json").symlink_to(mlp_model)
    before = mlp_model.read_bytes(), inputs.read_bytes()
    for report, role in [(mlp_model, "the model"), (tmp_path / "hard.json", "the model"),
                         (tmp_path / "soft.json", "the model"), (tmp_path / "." / "mlp.onnx", "the model"),
                         (inputs, "an --inputs file")]:
        started = time.perf_counter()
        result = run_main(capsys, "--model", mlp_model, "--inputs", inputs, "--report", report, *FAST)
        assert_user_error(result, f"is {role}")
        assert time.perf_counter() - started < 5  # refused up front, not after a run
    assert (mlp_model.read_bytes(), inputs.read_bytes()) == before


def test_the_report_replaces_a_previous_report_and_nothing_else(mlp_model, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert_user_error(run_main(capsys, "--model", mlp_model, "--report", notes), "is not a report speedster-run wrote")
    assert notes.read_text() == '{"mine": true}'
    assert_user_error(run_main(capsys, "--model", mlp_model, "--report", tmp_path), "is a directory")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "elsewhere" / "x.json")
    assert_user_error(run_main(capsys, "--model", mlp_model, "--report", tmp_path / "dangling.json"),
                      "a symlink to nothing")
    assert_user_error(run_main(capsys, "--model", mlp_model, "--save", tmp_path / "out",
                               "--report", tmp_path / "out" / "report.json"), "is inside --save")

    previous = tmp_path / "runs" / "report.json"
    previous.parent.mkdir()
    previous.write_text(json.dumps({"config": {}, "candidates": [], "report_version": 1}))
    result = cli("--model", mlp_model, "--backends", "onnxruntime", "--report", previous, *FAST)
    assert result.returncode == 0, result.stderr
    assert json.loads(previous.read_text())["winner"]  # this run's report


def test_an_unwritable_report_or_save_place_is_refused_up_front(mlp_model, tmp_path, capsys, request):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_user_error(run_main(capsys, "--model", mlp_model, "--report", a_file / "report.json"), "is not a directory")
    assert_user_error(run_main(capsys, "--model", mlp_model, "--save", a_file / "out"), "is not a directory")

    # A place the ordinary user reaches (pytest's own temporary directories are private to root when root runs it).
    open_dir = Path(tempfile.mkdtemp(prefix="output-paths-"))
    request.addfinalizer(lambda: (locked.chmod(0o755), (locked / "empty").chmod(0o755), shutil.rmtree(open_dir)))
    open_dir.chmod(0o755)
    mlp_model = mlp_onnx(open_dir / "mlp.onnx")
    locked = open_dir / "locked"
    (locked / "empty").mkdir(parents=True)
    locked.chmod(0o555)
    (locked / "empty").chmod(0o555)
    for option, path in [("--report", locked / "report.json"), ("--report", locked / "new" / "report.json"),
                         ("--save", locked / "out"), ("--save", locked / "empty")]:
        started = time.perf_counter()
        result = main_as_ordinary_user("--model", mlp_model, "--backends", "onnxruntime", option, path, *FAST)
        assert_user_error(result, "cannot write in")
        assert time.perf_counter() - started < 5  # refused up front, not after a run
    assert sorted(p.name for p in locked.iterdir()) == ["empty"]


def test_inputs_of_the_wrong_dtype_are_an_error_naming_input_and_dtypes(mlp_model, tmp_path, capsys):
    for given in (np.float64, np.int64, np.float16):
        path = tmp_path / f"{np.dtype(given).name}.npz"
        np.savez(path, x=np.zeros((1, 256), given))
        assert_user_error(run_main(capsys, "--model", mlp_model, "--inputs", path),
                          f"input 'x' is {np.dtype(given).name}, the model takes float32")


def test_more_threads_than_usable_cores_are_refused(mlp_model, capsys):
    usable = len(os.sched_getaffinity(0))
    assert_user_error(run_main(capsys, "--model", mlp_model, "--threads", usable + 1),
                      f"only {usable} cores are usable here")


def test_help_says_that_too_many_threads_are_refused(capsys):
    assert main(["--help"]) == 0
    assert "more than the usable cores is refused" in " ".join(capsys.readouterr().out.split())


def test_inputs_in_the_models_dtype_load_as_they_are(tmp_path):
    """bfloat16 (kept by .npz as raw 2-byte values) and a big-endian float32 are the declared dtypes, not errors."""
    import ml_dtypes

    from orchestrator.inputs import load_samples
    from speedster_run.shared.types import TensorInfo

    inputs = [TensorInfo("h", "bfloat16", (1, 4), ("", "")), TensorInfo("x", "float32", (1, 4), ("", ""))]
    path = tmp_path / "sample.npz"
    values = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.savez(path, h=values.astype(ml_dtypes.bfloat16), x=values.astype(">f4"))
    sample = load_samples([path], inputs, {})[0]
    assert sample["h"].dtype == np.dtype(ml_dtypes.bfloat16) and np.array_equal(sample["h"].astype(np.float32), values)
    assert sample["x"].dtype == np.dtype("<f4") and np.array_equal(sample["x"], values)
