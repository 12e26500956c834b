"""Auto sandbox: each backend's runner in Docker when the engine answers and the backend's image exists, else local.

It routes: every runner belongs to the sandbox that started it, and each call about a runner goes there. The choice is
made once per backend, says why, and ends up in the progress output and the report.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.sandboxes.base import ExitInfo, RunnerProcess, Sandbox, SandboxError


def _why(error: Exception) -> str:
    """Why Docker was not used, without the advice to use the local sandbox (auto just did)."""
    return str(error).replace(", or use --sandbox local", "").replace(" or use --sandbox local", "")


class AutoSandbox(Sandbox):
    name = "auto"
    # Local runners start in parallel; containers start one at a time (the Docker sandbox's client and counters are
    # not shared across threads), under _docker_starts.
    concurrent_starts = 4

    def __init__(self, device: str = "cpu", docker_options: dict | None = None, local: Sandbox | None = None,
                 docker: Sandbox | None = None):
        """`docker_options` are DockerSandbox's keyword arguments; `local`/`docker` replace the sandboxes (tests)."""
        self.device = device
        self.docker_options = dict(docker_options or {})
        self._local = local
        self._docker = docker
        self._docker_problem = ""  # why Docker is out for every backend (no engine, a share it refused)
        self._shares: list[tuple[Path, tuple[Path, ...]]] = []
        self._routes: dict[str, tuple[Sandbox, str, str]] = {}  # backend -> (sandbox, kind, note)
        self._owners: list[tuple[RunnerProcess, Sandbox]] = []
        self._lock = threading.RLock()  # routes, owners and the lazily made sandboxes, from parallel starts
        self._docker_starts = threading.Lock()

    def _local_sandbox(self) -> Sandbox:
        if self._local is None:
            from orchestrator.sandboxes.local import LocalSandbox

            self._local = LocalSandbox()
        return self._local

    def _docker_sandbox(self) -> Sandbox | None:
        """The Docker sandbox, or None (and the reason in _docker_problem) when runners cannot use it here."""
        if self._docker_problem:
            return None
        if self._docker is None:
            from orchestrator.sandboxes.docker import DockerSandbox

            self._docker = DockerSandbox(self.device, **self.docker_options)
        try:
            self._docker.engine()
            for directory, files in self._shares:
                self._docker.share(directory, files)
        except (SandboxError, UserError) as error:
            self._docker_problem = _why(error)
            return None
        return self._docker

    def _route(self, backend: str) -> tuple[Sandbox, str, str]:
        with self._lock:
            return self._route_locked(backend)

    def _route_locked(self, backend: str) -> tuple[Sandbox, str, str]:
        if backend not in self._routes:
            docker = self._docker_sandbox()
            if docker is None:
                self._routes[backend] = (self._local_sandbox(), "local", self._docker_problem)
            else:
                try:
                    docker.image(backend)
                    self._routes[backend] = (docker, "docker", docker.image_ref(backend))
                except SandboxError as error:  # no image for it (or the engine broke): this backend stays local
                    self._routes[backend] = (self._local_sandbox(), "local", _why(error))
        return self._routes[backend]

    def _owner(self, runner: RunnerProcess) -> Sandbox:
        with self._lock:
            owners = list(self._owners)
        for started, sandbox in owners:
            if started is runner:
                return sandbox
        raise KeyError(f"runner {runner.description} was not started by this sandbox")

    # --- the Sandbox interface, delegated ----------------------------------------------------------------------

    def placement(self, backend: str) -> tuple[str, str]:
        _, kind, note = self._route(backend)
        return kind, note

    def share(self, directory: Path, files: Sequence[Path] = ()) -> None:
        self._shares.append((Path(directory), tuple(files)))
        if self._docker is not None and not self._docker_problem:
            try:
                self._docker.share(directory, files)
            except UserError as error:
                self._docker_problem = _why(error)

    def runner_path(self, backend: str, path: str) -> str:
        return self._route(backend)[0].runner_path(backend, path)

    def start(self, backend: str, threads: int, ready_timeout_s: float = 120.0) -> RunnerProcess:
        from orchestrator.sandboxes.docker_engine import ContainerStartError

        sandbox = self._route(backend)[0]
        try:
            runner = self._start_in(sandbox, backend, threads, ready_timeout_s)
        except ContainerStartError as error:  # the engine cannot run it here (a GPU without its runtime...)
            with self._lock:
                sandbox = self._local_sandbox()
                self._routes[backend] = (sandbox, "local", _why(error))
            runner = sandbox.start(backend, threads, ready_timeout_s)
        with self._lock:
            self._owners.append((runner, sandbox))
        return runner

    def _start_in(self, sandbox: Sandbox, backend: str, threads: int, ready_timeout_s: float) -> RunnerProcess:
        if sandbox.concurrent_starts > 1:
            return sandbox.start(backend, threads, ready_timeout_s)
        with self._docker_starts:
            return sandbox.start(backend, threads, ready_timeout_s)

    def client(self, runner: RunnerProcess):
        return self._owner(runner).client(runner)

    def exit_info(self, runner: RunnerProcess) -> ExitInfo | None:
        return self._owner(runner).exit_info(runner)

    def stop(self, runner: RunnerProcess) -> None:
        self._owner(runner).stop(runner)

    def kill(self, runner: RunnerProcess) -> None:
        self._owner(runner).kill(runner)

    def logs(self, runner: RunnerProcess, max_lines: int = 40) -> str:
        return self._owner(runner).logs(runner, max_lines)

    def reproduce_command(self, runner: RunnerProcess) -> str:
        return self._owner(runner).reproduce_command(runner)

    def environment(self) -> dict:
        data = self._docker.environment() if self._docker is not None and not self._docker_problem else {}
        if self._docker_problem:
            data["docker_unused"] = self._docker_problem
        return data

    def close(self) -> None:
        try:
            if self._docker is not None:
                self._docker.close()
        finally:
            if self._local is not None:
                self._local.close()
