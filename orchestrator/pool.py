"""One runner per backend for the run, restarted when it dies; every call has a deadline and a failure category."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from orchestrator.runner_client import RunnerCallError, RunnerClient
from orchestrator.sandboxes.base import RunnerProcess, Sandbox, SandboxError
from speedster_run.shared import catalog

T = TypeVar("T")


@dataclasses.dataclass
class CallFailure(Exception):
    """A call that did not return: category (timeout, crash, oom, runtime), the runner's last log lines, and the
    command that starts that runner by hand (taken when the call failed: the runner may be gone by the time the
    failure is recorded)."""

    category: str
    message: str
    runner_log: str = ""
    runner_command: str = ""

    def __str__(self) -> str:
        return f"{self.category}: {self.message}"


@dataclasses.dataclass
class _Live:
    process: RunnerProcess
    client: RunnerClient
    generation: int


class RunnerPool:
    """Owns the runners of one run. `generation(backend)` changes whenever a runner is replaced."""

    def __init__(self, sandbox: Sandbox, threads: int, ready_timeout_s: float | None = None):
        """`ready_timeout_s`: how long a runner may take to start serving; None gives each backend its own deadline
        from the catalog (an image that loads a large library takes longer)."""
        self.sandbox = sandbox
        self.threads = threads
        self.ready_timeout_s = ready_timeout_s
        self._live: dict[str, _Live] = {}
        self._generations: dict[str, int] = {}
        self._attached: set[str] = set()  # keys served in this process (orchestrator.in_process), never started
        # Runners of different backends start in parallel threads; one backend's runner is started once.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def attach(self, key: str, client, description: str) -> None:
        """Serves `key` with a client that needs no runner (the user's own model in this process)."""
        self._attached.add(key)
        self._generations[key] = 1
        self._live[key] = _Live(RunnerProcess(backend=key, target=client.target, description=description), client, 1)

    def _backend_lock(self, backend: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(backend, threading.Lock())

    def _runner(self, backend: str) -> _Live:
        live = self._live.get(backend)
        if live is not None:
            return live
        with self._backend_lock(backend):
            return self._start(backend)

    def _start(self, backend: str) -> _Live:
        live = self._live.get(backend)
        if live is None:
            try:
                process = self.sandbox.start(backend, self.threads, self.start_timeout_s(backend))
            except SandboxError as error:
                raise CallFailure(error.category, str(error)) from None
            generation = self._generations.get(backend, 0) + 1
            self._generations[backend] = generation
            live = self._live[backend] = _Live(process, self.sandbox.client(process), generation)
        return live

    def start_timeout_s(self, backend: str) -> float:
        """The deadline of the backend's runner start: the pool's, else the catalog's for that backend."""
        return self.ready_timeout_s if self.ready_timeout_s is not None else catalog.start_timeout_s(backend)

    def in_process(self, key: str) -> bool:
        """True for what attach() serves: no runner, no model file."""
        return key in self._attached

    def generation(self, backend: str) -> int:
        """The current runner's generation, starting the runner if none lives."""
        return self._runner(backend).generation

    def is_current(self, backend: str, generation: int) -> bool:
        """True while the runner of that generation still serves (never starts one)."""
        live = self._live.get(backend)
        return live is not None and live.generation == generation

    def runner_process(self, backend: str) -> RunnerProcess | None:
        """The backend's live runner, if one is started."""
        live = self._live.get(backend)
        return live.process if live else None

    def runner_description(self, backend: str) -> str:
        live = self._live.get(backend)
        return live.process.description if live else ""

    def runner_command(self, backend: str) -> str:
        """The command that starts the backend's live runner by hand; "" when none lives or it is served in this
        process."""
        live = self._live.get(backend)
        return self._runner_command(backend, live) if live else ""

    def _runner_command(self, backend: str, live: _Live) -> str:
        return "" if backend in self._attached else self.sandbox.reproduce_command(live.process)

    def call(self, backend: str, action: Callable[[RunnerClient], T]) -> T:
        """Runs action(client) on the backend's runner; a hang, crash or death becomes a CallFailure."""
        live = self._runner(backend)
        try:
            return action(live.client)
        except RunnerCallError as error:
            raise self._failure(backend, live, error) from None

    def _failure(self, backend: str, live: _Live, error: RunnerCallError) -> CallFailure:
        command = self._runner_command(backend, live)
        if error.kind == "busy":
            # Serving another caller's call (or one of ours past its deadline) until this call's deadline: the
            # runner is fine, so it stays; the message says what it served and since when.
            return CallFailure("timeout", str(error), self.sandbox.logs(live.process), command)
        if error.kind == "timeout" and not self.sandbox.can_kill:
            # A remote runner cannot be stopped from here: it stays in use (its loaded candidates too), and answers
            # "busy" to the next calls until the stuck one finishes.
            return CallFailure("timeout", "no answer before the deadline; the runner is not ours to kill, so it may "
                               "still be busy with this call", self.sandbox.logs(live.process), command)
        if error.kind == "timeout":
            self.sandbox.kill(live.process)  # stuck in a compiler: nothing else will stop it
            failure = CallFailure("timeout", "no answer before the deadline; runner killed", "", command)
        elif error.kind == "gone":
            info = self._wait_exit(live)
            category, message = (info.category, info.message) if info else ("crash", error.args[0])
            failure = CallFailure(category, message, "", command)
        else:
            return CallFailure("runtime", f"protocol error: {error}", self.sandbox.logs(live.process), command)
        failure.runner_log = self.sandbox.logs(live.process)
        self._discard(backend)
        return failure

    def _wait_exit(self, live: _Live):
        """A runner whose connection dropped is dying; give it a moment to be reaped so its exit status is known."""
        for _ in range(50):
            info = self.sandbox.exit_info(live.process)
            if info is not None:
                return info
            time.sleep(0.1)
        self.sandbox.kill(live.process)
        return None

    def _discard(self, backend: str) -> None:
        live = self._live.pop(backend, None)
        if live is not None:
            live.client.close()
            if backend not in self._attached:
                self.sandbox.stop(live.process)

    def close(self) -> None:
        for backend in list(self._live):
            self._discard(backend)
        self.sandbox.close()
