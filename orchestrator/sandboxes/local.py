"""Local sandbox: each backend's runner is a child process, so a segfault or hang kills only that runner."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orchestrator.runner_client import wait_until_serving
from orchestrator.sandboxes.base import ExitInfo, RunnerProcess, Sandbox, SandboxError
from speedster_run.shared.parent_death import PARENT_PID_ENV

# How often start() looks for the runner's socket: dialing before it exists costs gRPC's 1 s reconnect backoff.
_SOCKET_POLL_S = 0.02


def describe_exit(returncode: int) -> ExitInfo:
    """Maps a dead runner's exit status to a failure category."""
    if returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGKILL:
            # Nobody here sent SIGKILL (timeouts are recorded before the kill): the kernel's OOM killer did.
            return ExitInfo("oom", f"runner killed by {name} (most likely the out-of-memory killer)")
        return ExitInfo("crash", f"runner died with {name}")
    return ExitInfo("crash", f"runner exited with status {returncode}")


class LocalSandbox(Sandbox):
    name = "local"
    concurrent_starts = 4  # each start is its own child process; only the counter and the list below are shared

    def __init__(self, workdir: Path | None = None, python: str = sys.executable, pin_cpus: bool = True):
        self.python = python
        self.pin_cpus = pin_cpus
        self.workdir = Path(tempfile.mkdtemp(prefix="speedster-run-", dir=workdir))
        self._started: list[RunnerProcess] = []
        self._count = 0
        self._lock = threading.Lock()  # starts run in parallel threads: _count and _started are shared
        # Every runner is spawned by this one thread, alive as long as the sandbox: the kernel's parent-death signal
        # (which the runner sets on itself) fires when the *thread* that forked it ends, so a runner spawned by a
        # short-lived thread (a parallel start) would be killed as soon as that thread finished.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-spawner")

    def _environment(self, threads: int) -> dict[str, str]:
        env = dict(os.environ)
        # The child imports this package from the same place the orchestrator did (a checkout or an install).
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, str(Path(root) / "proto"), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        # The runner sets the kernel's parent-death signal on itself (proto/speedster_run/shared/parent_death.py): no orphans.
        env[PARENT_PID_ENV] = str(os.getpid())
        if threads > 0:
            # Thread pools are sized at library import; the Load request sets them again per model.
            for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                env[variable] = str(threads)
        return env

    def _command(self, backend: str, socket_path: Path) -> list[str]:
        return [self.python, "-m", "runners.server", "--backend", backend, "--listen", f"unix://{socket_path}",
                "--workdir", str(self.workdir)]

    def start(self, backend: str, threads: int, ready_timeout_s: float = 120.0) -> RunnerProcess:
        with self._lock:
            self._count += 1
            number = self._count
        socket_path = self.workdir / f"{backend}-{number}.sock"
        log_path = self.workdir / f"{backend}-{number}.stderr"
        command = self._command(backend, socket_path)
        with open(log_path, "wb") as log:
            try:
                # No preexec_fn: it would turn subprocess's vfork() into a fork() that runs gRPC's fork handlers in
                # the child (see proto/speedster_run/shared/parent_death.py). Its own session: Ctrl-C reaches only the orchestrator.
                process = self._spawner.submit(
                    subprocess.Popen, command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env=self._environment(threads), start_new_session=True,
                ).result()
            except OSError as error:
                raise SandboxError(f"cannot start runner for {backend}: {error}") from error
        if self.pin_cpus and threads > 0 and hasattr(os, "sched_setaffinity"):
            # Pin the runner to as many cores as it has threads: fewer migrations, steadier timings.
            allowed = sorted(os.sched_getaffinity(0))
            if threads < len(allowed):
                os.sched_setaffinity(process.pid, allowed[:threads])
        runner = RunnerProcess(backend=backend, target=f"unix://{socket_path}",
                               description=f"local process pid {process.pid}", handle=(process, log_path, command))
        with self._lock:
            self._started.append(runner)
        deadline = time.monotonic() + ready_timeout_s
        while not (socket_path.exists() and
                   wait_until_serving(runner.target, timeout_s=min(1.0, max(0.1, deadline - time.monotonic())))):
            if process.poll() is not None:
                info = describe_exit(process.returncode)
                raise SandboxError(f"runner for {backend} exited at start ({info.message}): {self.logs(runner, 5)}")
            if time.monotonic() > deadline:
                self.stop(runner)
                raise SandboxError(f"runner for {backend} did not become ready in {ready_timeout_s:.0f} s")
            time.sleep(_SOCKET_POLL_S)
        return runner

    def exit_info(self, runner: RunnerProcess) -> ExitInfo | None:
        process = runner.handle[0]
        if process.poll() is None:
            return None
        return describe_exit(process.returncode)

    def stop(self, runner: RunnerProcess) -> None:
        process = runner.handle[0]
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with self._lock:
            if runner in self._started:
                self._started.remove(runner)

    def kill(self, runner: RunnerProcess) -> None:
        process = runner.handle[0]
        if process.poll() is None:
            process.kill()
            process.wait()

    def logs(self, runner: RunnerProcess, max_lines: int = 40) -> str:
        try:
            lines = runner.handle[1].read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-max_lines:])

    def reproduce_command(self, runner: RunnerProcess) -> str:
        return shlex.join(runner.handle[2])

    def close(self) -> None:
        with self._lock:
            started = list(self._started)
        for runner in started:
            self.stop(runner)
        self._spawner.shutdown(wait=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
