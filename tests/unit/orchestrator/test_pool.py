"""RunnerPool with real local runners of the fake backend: a crash, a hang or a death at start becomes a categorised
CallFailure carrying the command that starts that runner, and the next call gets a fresh runner."""

from __future__ import annotations

import time

import pytest

from orchestrator.pool import CallFailure, RunnerPool
from orchestrator.sandboxes.local import LocalSandbox
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.shared import catalog


def _load(pool: RunnerPool, model, variant: str, timeout_s: float = 60.0) -> pb.LoadResponse:
    request = pb.LoadRequest(model=pb.ModelSource(path=str(model), format="onnx"), device="cpu", precision="fp32",
                             variant=variant, threads=1)
    return pool.call("fake", lambda c: c.load(request, timeout_s))


@pytest.fixture
def pool():
    pool = RunnerPool(LocalSandbox(), threads=1)
    yield pool
    pool.close()


def test_a_crash_is_a_categorised_failure_with_the_runners_command_and_the_next_call_gets_a_new_runner(
        pool, mlp_model, fake_backend_env):
    fake_backend_env("ok", "abort")
    first = pool.generation("fake")
    assert _load(pool, mlp_model, "ok").model_id
    live_command = pool.runner_command("fake")
    assert "-m runners.server --backend fake" in live_command

    with pytest.raises(CallFailure) as caught:
        _load(pool, mlp_model, "abort")
    failure = caught.value
    assert failure.category == "crash" and "SIGABRT" in failure.message
    # Taken before the dead runner was discarded: the same command that started it.
    assert failure.runner_command == live_command
    assert not pool.is_current("fake", first) and pool.runner_process("fake") is None
    assert pool.runner_command("fake") == ""  # none lives until the next call starts one

    assert _load(pool, mlp_model, "ok").model_id  # a fresh runner
    assert pool.generation("fake") == first + 1
    assert pool.runner_command("fake") != live_command  # its own socket


def test_a_hang_past_its_deadline_is_a_timeout_and_the_runner_is_killed(pool, mlp_model, fake_backend_env):
    fake_backend_env("hang")
    generation = pool.generation("fake")
    process = pool.runner_process("fake").handle[0]
    started = time.monotonic()
    with pytest.raises(CallFailure) as caught:
        _load(pool, mlp_model, "hang", timeout_s=2.0)
    assert caught.value.category == "timeout" and "runner killed" in caught.value.message
    assert time.monotonic() - started < 30
    assert process.poll() is not None, "the hung runner was left running"
    assert caught.value.runner_command and not pool.is_current("fake", generation)


def test_a_runner_that_dies_at_start_is_a_crash_failure_and_the_next_start_may_succeed(
        pool, fake_backend_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SPEEDSTER_FAKE_START_CRASHES", f"{tmp_path / 'starts'}:1")
    with pytest.raises(CallFailure) as caught:
        pool.generation("fake")
    assert caught.value.category == "crash" and "exited at start" in caught.value.message
    assert pool.call("fake", lambda c: c.describe()).backend == "fake"
    assert pool.generation("fake") == 1  # the failed start never served


class _RecordingSandbox(LocalSandbox):
    """Local runners that remember the start deadline each one was given."""

    def __init__(self):
        super().__init__()
        self.deadlines: dict[str, float] = {}

    def start(self, backend, threads, ready_timeout_s=120.0):
        self.deadlines[backend] = ready_timeout_s
        return super().start(backend, threads, ready_timeout_s)


@pytest.mark.parametrize("given", [None, 45.0])
def test_each_backends_start_deadline_comes_from_the_catalog_unless_the_pool_sets_one(fake_backend_env, given):
    sandbox = _RecordingSandbox()
    pool = RunnerPool(sandbox, threads=1, ready_timeout_s=given)
    try:
        for backend in ("fake", "onnxruntime"):
            pool.generation(backend)
    finally:
        pool.close()
    if given is None:
        # fake is no built-in backend: it gets the catalog's default; onnxruntime its own entry's.
        assert sandbox.deadlines == {"fake": catalog.DEFAULT_START_TIMEOUT_S,
                                     "onnxruntime": catalog.get("onnxruntime").start_timeout_s}
    else:
        assert sandbox.deadlines == {"fake": given, "onnxruntime": given}
