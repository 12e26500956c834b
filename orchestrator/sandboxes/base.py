"""The sandbox interface: start a backend's runner, tell how it ended, stop it, keep its logs."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass
class RunnerProcess:
    """A started runner: the gRPC target to dial and what the sandbox needs to manage it."""

    backend: str
    target: str  # "unix:///path.sock" or "host:port"
    description: str  # how it runs, for the report: "local process pid 123", "container abc"
    handle: object = None  # the sandbox's own handle (Popen, container...)
    image: str = ""  # the container image it runs from ("speedster-run/onnxruntime:0.1.0"), where there is one
    image_digest: str = ""  # that image's content digest ("sha256:..."), what the report pins


@dataclasses.dataclass(frozen=True)
class ExitInfo:
    """How a runner ended; category is the failure category it implies ("crash", "oom")."""

    category: str
    message: str


class SandboxError(Exception):
    """A runner could not be started (bad interpreter, engine not running...). `category` is the failure category
    of its backend's row: "crash" for a runner that died or hung at start (worth one more try), "unavailable" for
    what no retry changes (no image, no engine)."""

    category = "crash"


class Sandbox(abc.ABC):
    """Starts and stops runners. Every implementation cleans up in stop() and in close(), whatever happened."""

    name: str
    # False where runners cannot read the orchestrator's files (remote hosts): models are then streamed to them.
    shares_filesystem: bool = True
    # False where kill() cannot stop a runner (one that others operate): a call past its deadline then leaves the
    # runner in place, still busy, and the pool keeps using it.
    can_kill: bool = True
    # How many runners a run may start at once through this sandbox: a start mostly waits on a process importing
    # its libraries, so starting several together shortens a run. 1 for a sandbox whose start() is not safe to
    # call from several threads.
    concurrent_starts: int = 1

    @abc.abstractmethod
    def start(self, backend: str, threads: int, ready_timeout_s: float) -> RunnerProcess:
        """Starts the backend's runner and returns once its health check answers SERVING."""

    @abc.abstractmethod
    def exit_info(self, runner: RunnerProcess) -> ExitInfo | None:
        """None while the runner lives; otherwise how it died."""

    @abc.abstractmethod
    def stop(self, runner: RunnerProcess) -> None:
        """Stops the runner (terminate, then kill) and reaps it. Safe to call twice."""

    @abc.abstractmethod
    def kill(self, runner: RunnerProcess) -> None:
        """Kills a runner stuck past its deadline at once (a hung compiler may ignore a polite stop)."""

    @abc.abstractmethod
    def logs(self, runner: RunnerProcess, max_lines: int = 40) -> str:
        """The last lines the runner wrote to stderr."""

    @abc.abstractmethod
    def reproduce_command(self, runner: RunnerProcess) -> str:
        """A shell command that starts the same runner by hand (the `docker run` line of its container, the local
        process's command line): a failed candidate's report row records it, so that a crash can be debugged in
        that runner alone."""

    def client(self, runner: RunnerProcess):
        """A RunnerClient connected to the runner (sandboxes with TLS or a token override this)."""
        from orchestrator.runner_client import RunnerClient

        return RunnerClient(runner.target)

    def share(self, directory: Path, files: Sequence[Path] = ()) -> None:
        """Shows the runners started from now on what they need of a directory: with `files` (the model and its
        external data) only those, without them the whole directory (the run's own, where export writes).
        Runners in a local process read everything already."""

    def runner_path(self, backend: str, path: str) -> str:
        """Where the backend's runner sees a shared file: the same path, unless the sandbox mounted it elsewhere."""
        return path

    def placement(self, backend: str) -> tuple[str, str]:
        """(kind, note) of where the backend's runner lives, for the progress output and the report: ("docker",
        "speedster-run/onnxruntime:0.1.0"), ("local", "no image for torch")..."""
        return self.name, ""

    def environment(self) -> dict:
        """What the report should record about the sandbox itself (engine version, images)."""
        return {}

    def close(self) -> None:
        """Releases everything the sandbox started."""
