"""A crashing, hanging, wrong or out-of-memory candidate becomes a report row; the run goes on and cleans up."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from orchestrator.config import RunConfig, TimingConfig
from orchestrator.run import optimize

FAST_TIMING = TimingConfig(time_budget_s=0.3, rounds=2, warmup_iterations=2)


def _children() -> set[int]:
    """Live child processes of this test process (zombies excluded)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            children.add(int(entry.name))
    return children


def _run(model: Path, **overrides):
    config = RunConfig(model=model, backends=("onnxruntime", "fake"), samples=2, sandbox="local",
                       **{"timing": FAST_TIMING, **overrides})
    return optimize(config)


def _row(report, name):
    return next(r for r in report.candidates if r.name == name)


def test_abort_and_wrong_outputs_are_rows_and_the_run_completes(mlp_model, fake_backend_env):
    fake_backend_env("ok", "abort", "wrong", "abort_in_run", "oom", "fail_compile")
    before = _children()
    report = _run(mlp_model)
    assert _row(report, "fake/fp32-abort").failure.category == "crash"
    assert "SIGABRT" in _row(report, "fake/fp32-abort").failure.message
    assert _row(report, "fake/fp32-abort_in_run").failure.category == "crash"
    assert _row(report, "fake/fp32-abort_in_run").failure.stage == "benchmark"  # 2 samples checked, then it dies
    wrong = _row(report, "fake/fp32-wrong")
    assert wrong.failure.category == "accuracy" and wrong.comparison.drop > 0.1
    assert _row(report, "fake/fp32-oom").failure.category == "oom"
    assert _row(report, "fake/fp32-fail_compile").failure.category == "compile"
    assert "speedster-run --model" in _row(report, "fake/fp32-abort").failure.reproduce
    # The command that starts the runner it crashed in, taken before that runner was discarded.
    assert "-m runners.server --backend fake" in _row(report, "fake/fp32-abort").failure.runner_command
    ok = _row(report, "fake/fp32-ok")
    assert ok.status == "ok" and ok.stats.n > 0
    # The abort killed the runner that held "ok": it was reloaded in a fresh runner for the benchmark.
    assert any("reloaded" in note for note in ok.notes)
    assert report.winner is not None
    assert _children() <= before, "runner processes left behind"


def test_a_hanging_compile_is_killed_at_the_deadline(mlp_model, fake_backend_env):
    fake_backend_env("hang", "ok")
    before = _children()
    started = time.monotonic()
    report = _run(mlp_model, timeout_s=3.0)
    elapsed = time.monotonic() - started
    hang = _row(report, "fake/fp32-hang")
    assert hang.failure.category == "timeout" and hang.failure.stage == "load"
    assert _row(report, "fake/fp32-ok").status == "ok"
    assert elapsed < 40, f"the hang was not cut at its deadline ({elapsed:.0f} s)"
    assert _children() <= before


def test_the_original_failing_means_no_winner(tmp_path, fake_backend_env):
    from tests.conftest import mystery_onnx

    # The reference cannot be computed, so nothing can qualify.
    report = _run(mystery_onnx(tmp_path / "mystery.onnx"))
    assert report.winner is None
    assert _row(report, "onnxruntime/fp32").failure.category == "compile"
    assert "no reference" in _row(report, "fake/fp32-ok").failure.message  # never benchmarked unchecked
    assert report.verdict.startswith("No candidate qualified")


def test_interrupt_during_a_run_leaves_no_runner(mlp_model, fake_backend_env):
    """Ctrl-C (KeyboardInterrupt) in the middle of a call still stops and reaps every runner."""
    import signal
    import threading

    fake_backend_env("hang")
    before = _children()
    timer = threading.Timer(4.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(mlp_model, timeout_s=60.0)
    finally:
        timer.cancel()
    assert _children() <= before


def test_a_hopelessly_slow_candidate_stops_being_timed_after_a_round(mlp_model, fake_backend_env):
    fake_backend_env("ok", "slow")  # "slow" sleeps 5 ms per run: hundreds of times the tiny model's time
    report = _run(mlp_model, timing=TimingConfig(time_budget_s=0.6, rounds=3, warmup_iterations=2, hopeless_min_ms=1))
    slow, ok = _row(report, "fake/fp32-slow"), _row(report, "fake/fp32-ok")
    assert slow.status == "ok" and len(slow.latencies_ns) == 1 and slow.stats.n > 0
    assert any("measured in 1 round(s) only" in note for note in slow.notes)
    assert len(ok.latencies_ns) == 3 and report.winner != "fake/fp32-slow"


@pytest.mark.parametrize("crashes", [1, 2])
def test_a_runner_that_dies_at_start_is_retried_once_then_a_crash_row_named_in_the_verdict(
        mlp_model, fake_backend_env, monkeypatch, tmp_path, crashes):
    monkeypatch.setenv("SPEEDSTER_FAKE_START_CRASHES", f"{tmp_path / 'starts'}:{crashes}")
    messages = []
    report = optimize(RunConfig(model=mlp_model, backends=("onnxruntime", "fake"), samples=2, timing=FAST_TIMING,
                                sandbox="local"),
                      progress=messages.append)
    assert any("fake runner failed to start" in m and "trying once more" in m for m in messages), messages
    rows = [r for r in report.candidates if r.backend == "fake"]
    if crashes == 1:  # the second start worked: the backend competes as if nothing happened
        assert [r.status for r in rows] == ["ok"] and "Not in the running" not in report.verdict
    else:
        assert len(rows) == 1 and rows[0].failure.category == "crash", rows
        assert "failed to start twice" in rows[0].failure.message and "SIGABRT" in rows[0].failure.message
        assert "Not in the running: fake" in report.verdict and report.winner is not None
