"""Failure categories on the docker sandbox: a crash, a hang, the kernel's OOM killer and an outside kill each cost
one row; the run completes and leaves no container behind."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.config import RunConfig, TimingConfig
from orchestrator.run import optimize
from tests.e2e.docker.conftest import fake_sandbox, run_containers

pytestmark = pytest.mark.docker

FAST_TIMING = TimingConfig(time_budget_s=0.3, rounds=2, warmup_iterations=2)


def _row(report, name):
    return next(r for r in report.candidates if r.name == name)


def test_abort_hang_and_oom_are_categorised(docker_engine, runner_images, readable_model, fake_backend_env):
    fake_backend_env("ok", "abort", "memory_hog", "hang")
    sandbox = fake_sandbox(runner_images, mem_limit="512m")
    config = RunConfig(model=readable_model, backends=("onnxruntime", "fake"), timing=FAST_TIMING, samples=2,
                       timeout_s=5.0)
    started = time.monotonic()
    report = optimize(config, sandbox=sandbox)
    elapsed = time.monotonic() - started

    abort = _row(report, "fake/fp32-abort")
    assert abort.failure.category == "crash" and "SIGABRT" in abort.failure.message, abort.failure
    assert abort.failure.reproduce  # the CLI command again
    hog = _row(report, "fake/fp32-memory_hog")
    assert hog.failure.category == "oom", hog.failure
    assert "out of memory (limit 512m)" in hog.failure.message
    hang = _row(report, "fake/fp32-hang")
    assert hang.failure.category == "timeout" and hang.failure.stage == "load"
    assert elapsed < 90, f"the hang was not cut at its deadline ({elapsed:.0f} s)"
    for name in ("onnxruntime/fp32", "fake/fp32-ok"):
        assert _row(report, name).status == "ok", _row(report, name).failure
    assert _row(report, "fake/fp32-ok").image == runner_images["onnxruntime"]
    assert report.winner is not None
    assert run_containers(docker_engine, sandbox.run_id) == [], "containers left behind"


def test_a_container_killed_from_outside_mid_benchmark_is_a_crash(docker_engine, runner_images, readable_model,
                                                                   fake_backend_env):
    fake_backend_env("slow", "ok")
    sandbox = fake_sandbox(runner_images)
    # A fixed count: "slow" (5 ms a run) then benchmarks for about 15 s, the others well under a second.
    config = RunConfig(model=readable_model, backends=("onnxruntime", "fake"), samples=2,
                       timing=TimingConfig(iterations=3000, rounds=1, warmup_iterations=1))
    killed: list[str] = []

    def kill_the_fake_runner() -> None:
        for container in run_containers(docker_engine, sandbox.run_id, backend="fake"):
            container.kill()
            killed.append(container.name)

    timer = threading.Timer(4.0, kill_the_fake_runner)

    def progress(message: str) -> None:
        if message.startswith("benchmark round 1/") and timer.ident is None:  # once, at the round's first line
            timer.start()

    try:
        report = optimize(config, progress=progress, sandbox=sandbox)
    finally:
        timer.cancel()
    assert killed, "the fake runner was not running when the test meant to kill it"
    slow = _row(report, "fake/fp32-slow")
    assert slow.failure is not None and slow.failure.category == "crash", slow.failure
    assert slow.failure.stage == "benchmark" and "SIGKILL" in slow.failure.message
    for name in ("onnxruntime/fp32", "fake/fp32-ok"):
        assert _row(report, name).status == "ok", _row(report, name).failure
    assert run_containers(docker_engine, sandbox.run_id) == [], "containers left behind"


def test_interrupt_during_a_run_leaves_no_container(docker_engine, runner_images, readable_model, fake_backend_env):
    """Ctrl-C (KeyboardInterrupt) in the middle of a call still removes every container of the run."""
    import os
    import signal

    fake_backend_env("hang")
    sandbox = fake_sandbox(runner_images)
    config = RunConfig(model=readable_model, backends=("onnxruntime", "fake"), timing=FAST_TIMING, samples=2,
                       timeout_s=60.0)
    timer = threading.Timer(6.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            optimize(config, sandbox=sandbox)
    finally:
        timer.cancel()
    assert run_containers(docker_engine, sandbox.run_id) == [], "containers left behind"
