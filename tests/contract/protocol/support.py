"""Shared by the protocol tests: a real RunnerServicer behind a real gRPC server on a unix socket, in this process,
and /proc helpers for looking at child processes without psutil."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from orchestrator.runner_client import RunnerClient
from runners.server import RUNNER_WORKERS, OwnThreadsHealthServicer, make_server
from runners.servicer import RunnerServicer
from speedster_run.runner.v1 import GRPC_OPTIONS, SERVICE_NAME
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc
from tests.contract.protocol.echo_backend import ECHO_BACKENDS

REPO = Path(__file__).resolve().parents[3]
TEST_BACKENDS = f"fake=tests.fakes.fake_backend:FakeBackend,{ECHO_BACKENDS}"
FAKE_VARIANTS = "ok,wrong,oom,fail_compile,slow"
TIMEOUT_S = 30.0


class LiveRunner:
    """The runner's own server (runners.server.make_server) over a unix socket, with a typed client and a raw stub
    on one channel each; `pool` is the RunnerService thread pool, for tests that fill it."""

    def __init__(self, backend: str, root: Path, accept_paths: bool = True):
        self.root = root
        self.servicer = RunnerServicer(backend, root / "work", accept_paths=accept_paths)
        self.health = OwnThreadsHealthServicer()
        self.pool = futures.ThreadPoolExecutor(max_workers=RUNNER_WORKERS)
        self.server = make_server(self.servicer, self.health, pool=self.pool)
        self.target = f"unix://{root / 'r.sock'}"
        assert self.server.add_insecure_port(self.target)
        self.server.start()
        for service in ("", SERVICE_NAME):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self.channel = grpc.insecure_channel(self.target, options=GRPC_OPTIONS)
        self.stub = pb_grpc.RunnerServiceStub(self.channel)
        self.client = RunnerClient(self.target)

    def close(self) -> None:
        self.client.close()
        self.channel.close()
        self.server.stop(grace=None).wait()


@contextlib.contextmanager
def live_runner(backend: str, accept_paths: bool = True, **env: str):
    """A LiveRunner for `backend`, with the test backends registered and env applied while it probes."""
    # A short directory: a unix socket path must fit in 108 bytes, pytest's tmp_path may not.
    root = Path(tempfile.mkdtemp(prefix="sr-proto-"))
    runner = None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPEEDSTER_RUN_BACKENDS", TEST_BACKENDS)
        patch.setenv("SPEEDSTER_FAKE_VARIANTS", FAKE_VARIANTS)
        for name, value in env.items():
            patch.setenv(name, value)
        try:
            runner = LiveRunner(backend, root, accept_paths)
            yield runner
        finally:
            if runner is not None:
                runner.close()
            shutil.rmtree(root, ignore_errors=True)


def child_pids() -> set[int]:
    """Pids whose parent is this process, read from /proc (no psutil)."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            found.add(int(entry))
    return found


def process_state(pid: int) -> str | None:
    """The /proc state letter of pid ("R", "S", "Z"...), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
