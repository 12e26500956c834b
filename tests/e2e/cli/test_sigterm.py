"""speedster-run ended by SIGTERM (a CI timeout, systemd, `kill`) cleans up as after Ctrl-C: no runner process and
no speedster-run-* work directory of the run is left behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import REPO, mlp_onnx


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text` (the runners' sockets live in the run's temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue  # gone meanwhile
        if text in command and "zombie" not in state:
            found.append(int(entry.name))
    return found


def test_sigterm_mid_run_stops_the_runners_and_removes_the_work_directories(tmp_path, request):
    model = mlp_onnx(tmp_path / "mlp.onnx")
    # The run's own temp dir, so that what it leaves is its own; short, as unix socket paths must be.
    temp = Path(tempfile.mkdtemp(prefix="sigterm-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    env = dict(os.environ, TMPDIR=str(temp))
    process = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "--model", str(model), "--sandbox", "local",
         "--backends", "onnxruntime,openvino", "--iterations", "20000000", "--rounds", "2", "--samples", "2"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in process.stderr:  # wait until it benchmarks: runners started, work directories made
            lines.append(line)
            if "benchmark round 1/2" in line:
                break
        assert process.poll() is None, "".join(lines)
        assert list(temp.glob("speedster-run-*")) and processes_mentioning(str(temp)), "nothing to clean up yet"
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 143, "".join(lines) + rest
    assert "terminated (SIGTERM)" in rest and "Traceback" not in rest, rest
    assert list(temp.glob("speedster-run-*")) == []
    deadline = time.monotonic() + 5  # a runner that got SIGTERM from stop() may take a moment to go
    while processes_mentioning(str(temp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(temp)) == []
