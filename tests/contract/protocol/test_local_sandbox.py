"""LocalSandbox with real runner processes: readiness, how deaths are classified, reaping, and no orphans.

How exit_info classifies a dead runner (orchestrator.sandboxes.local.describe_exit):
  * killed by SIGKILL -> "oom": the orchestrator records its own timeouts before it kills, so an unexplained SIGKILL is
    taken to be the kernel's out-of-memory killer (a heuristic: any other SIGKILL sender is misreported as oom);
  * killed by any other signal (SIGSEGV, SIGABRT, ...) -> "crash", naming the signal;
  * exited with any status -> "crash", naming the status.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from orchestrator.runner_client import RunnerCallError, RunnerClient
from orchestrator.sandboxes.local import LocalSandbox
from speedster_run.runner.v1 import runner_pb2 as pb
from tests.contract.protocol.support import REPO, TEST_BACKENDS, TIMEOUT_S, child_pids, process_state

READY_S = 60.0


@pytest.fixture
def sandbox(monkeypatch):
    # The runner inherits the environment: the echo backend is registered in the child through it.
    monkeypatch.setenv("SPEEDSTER_RUN_BACKENDS", TEST_BACKENDS)
    box = LocalSandbox()
    yield box
    box.close()


def wait_dead(box: LocalSandbox, runner, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while (info := box.exit_info(runner)) is None:
        assert time.monotonic() < deadline, "runner still alive"
        time.sleep(0.02)
    return info


def gone(pid: int) -> bool:
    """No process with this pid, or only a zombie nobody has reaped yet."""
    return process_state(pid) in (None, "Z")


def test_start_gives_a_serving_runner(sandbox):
    runner = sandbox.start("echo", threads=1, ready_timeout_s=READY_S)
    process = runner.handle[0]
    assert runner.backend == "echo" and runner.target.startswith("unix://")
    assert runner.description == f"local process pid {process.pid}"
    assert sandbox.exit_info(runner) is None
    client = RunnerClient(runner.target)
    try:
        described = client.describe(TIMEOUT_S)
    finally:
        client.close()
    assert described.backend == "echo" and described.available
    assert "runners.server --backend echo" in sandbox.reproduce_command(runner)
    assert "listening on" in sandbox.logs(runner)
    assert os.sched_getaffinity(process.pid) == {min(os.sched_getaffinity(0))}  # threads=1: pinned to one core
    assert os.getsid(process.pid) == process.pid != os.getsid(0)  # its own session: Ctrl-C reaches only us


START_LOOP_RUNNERS = 100
START_LOOP_THREADS = 4  # starts overlap, as forks from a busy orchestrator do; the machine's cores bound the time


def test_a_hundred_runners_start_while_grpc_channels_are_live(sandbox):
    """Runners start from a process whose gRPC channels are live, as the orchestrator's are. A preexec_fn made
    subprocess fork() and run gRPC's fork handlers, which restarted gRPC's pollers in the child until close_fds
    closed their epoll fd: now and then a runner died with SIGABRT before exec (1 or 2 in 100 here before the fix)."""
    kept = [sandbox.start("echo", threads=0, ready_timeout_s=READY_S) for _ in range(2)]
    idle = [RunnerClient(runner.target) for runner in kept]  # connected and idle, so gRPC's fork handlers would run
    failures: list[str] = []

    def start_and_stop(count: int) -> None:
        for _ in range(count):
            try:
                runner = sandbox.start("echo", threads=0, ready_timeout_s=READY_S)
                client = RunnerClient(runner.target)
                try:
                    assert client.describe(TIMEOUT_S).available
                finally:
                    client.close()
                sandbox.stop(runner)
            except Exception as error:  # every failure counted, not only the first
                failures.append(str(error)[:300])

    try:
        for client in idle:
            assert client.describe(TIMEOUT_S).available
        threads = [threading.Thread(target=start_and_stop, args=(START_LOOP_RUNNERS // START_LOOP_THREADS,))
                   for _ in range(START_LOOP_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for client in idle:
            client.close()
    assert not failures, f"{len(failures)} of {START_LOOP_RUNNERS} runners failed to start: {failures[:3]}"
    assert sandbox._count == START_LOOP_RUNNERS + len(kept)


def test_a_runner_whose_parent_is_already_gone_exits_at_once(tmp_path):
    """The parent-death signal is set by the runner after exec; a parent that died before that is noticed."""
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'proto'}", SPEEDSTER_RUN_BACKENDS=TEST_BACKENDS,
               SPEEDSTER_RUN_PARENT_PID="1" if os.getpid() != 1 else "2")
    done = subprocess.run([sys.executable, "-m", "runners.server", "--backend", "echo", "--listen",
                           f"unix://{tmp_path}/r.sock", "--workdir", str(tmp_path)], env=env, cwd=REPO,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "parent process" in done.stderr and "is gone" in done.stderr, done.stderr
    assert not list(tmp_path.iterdir())  # it never got as far as its scratch directory or socket


@pytest.mark.parametrize(
    "variant, category, message",
    [
        ("segv", "crash", "runner died with SIGSEGV"),
        ("abort", "crash", "runner died with SIGABRT"),
        ("exit3", "crash", "runner exited with status 3"),
    ],
)
def test_crash_while_loading(sandbox, tmp_path, variant, category, message):
    """The backend really crashes inside Load: the call fails as "gone", exit_info tells how it died."""
    runner = sandbox.start("echo", threads=1, ready_timeout_s=READY_S)
    placeholder = tmp_path / "model.bin"
    placeholder.write_bytes(b"x")
    client = RunnerClient(runner.target)
    try:
        with pytest.raises(RunnerCallError) as caught:
            client.load(pb.LoadRequest(model=pb.ModelSource(path=str(placeholder)), variant=variant), TIMEOUT_S)
    finally:
        client.close()
    assert caught.value.kind == "gone"
    info = wait_dead(sandbox, runner)
    assert (info.category, info.message) == (category, message)


@pytest.mark.parametrize(
    "sig, category, message",
    [
        (signal.SIGSEGV, "crash", "SIGSEGV"),
        (signal.SIGABRT, "crash", "SIGABRT"),
        (signal.SIGKILL, "oom", "out-of-memory killer"),
    ],
)
def test_killed_by_signal(sandbox, sig, category, message):
    runner = sandbox.start("echo", threads=0, ready_timeout_s=READY_S)
    os.kill(runner.handle[0].pid, sig)
    info = wait_dead(sandbox, runner)
    assert info.category == category and message in info.message


def test_stop_reaps(sandbox):
    runner = sandbox.start("echo", threads=0, ready_timeout_s=READY_S)
    pid = runner.handle[0].pid
    sandbox.stop(runner)
    assert sandbox.exit_info(runner) is not None
    assert process_state(pid) is None  # reaped: not even a zombie is left
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    sandbox.stop(runner)  # twice is fine
    sandbox.kill(runner)


def test_close_leaves_no_children(monkeypatch):
    monkeypatch.setenv("SPEEDSTER_RUN_BACKENDS", TEST_BACKENDS)
    before = child_pids()
    box = LocalSandbox()
    runners = [box.start("echo", threads=0, ready_timeout_s=READY_S) for _ in range(2)]
    pids = {r.handle[0].pid for r in runners}
    assert pids <= child_pids()
    box.close()
    assert not (child_pids() - before)
    for pid in pids:
        assert process_state(pid) is None
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert not box.workdir.exists()


PARENT = textwrap.dedent(
    """
    import sys, time
    from orchestrator.sandboxes.local import LocalSandbox
    box = LocalSandbox()
    runner = box.start("echo", threads=0, ready_timeout_s=60)
    print(runner.handle[0].pid, box.workdir, flush=True)
    time.sleep(600)
    """
)
_PR_SET_CHILD_SUBREAPER = 36


def test_runner_dies_with_its_parent(monkeypatch):
    """SIGKILL the orchestrator: PR_SET_PDEATHSIG has the kernel SIGKILL its runner too."""
    monkeypatch.setenv("SPEEDSTER_RUN_BACKENDS", TEST_BACKENDS)
    libc = ctypes.CDLL(None, use_errno=True)
    # Orphans are re-parented to this process, so the runner can be reaped and its end status read here even where
    # the container's init does not reap.
    subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    runner_pid = None
    workdir = None
    try:
        line = parent.stdout.readline()
        assert line, "the parent exited before starting its runner"
        pid_text, workdir = line.split(maxsplit=1)
        runner_pid, workdir = int(pid_text), Path(workdir.strip())
        assert process_state(runner_pid) not in (None, "Z")
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while not gone(runner_pid):
            assert time.monotonic() < deadline, "the runner outlived its parent"
            time.sleep(0.02)
        if subreaper:
            _, status = os.waitpid(runner_pid, 0)
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
            assert process_state(runner_pid) is None
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if runner_pid is not None and not gone(runner_pid):
            os.kill(runner_pid, signal.SIGKILL)
        if subreaper:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
            if runner_pid is not None:
                try:
                    os.waitpid(runner_pid, 0)
                except ChildProcessError:
                    pass
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)  # the killed parent could not clean up
