"""Runners start in parallel (real local runners of the fake backend, each as slow to start as one importing a large
library): every one is described, in the backends' order, and the start takes about one runner's time, not the sum."""

from __future__ import annotations

from orchestrator.config import RunConfig
from orchestrator.pool import RunnerPool
from orchestrator.run import Run
from orchestrator.sandboxes.local import LocalSandbox
from tests.unit.orchestrator.named_fakes import NAMES, REGISTRATIONS

START_DELAY_S = 3.0


def _start(model, backends: list[str]) -> tuple[Run, list[str]]:
    pool = RunnerPool(LocalSandbox(), threads=1)
    messages: list[str] = []
    run = Run(RunConfig(model=model), None, [], pool, model.parent, messages.append)
    try:
        run.describe(backends)
    finally:
        pool.close()
    return run, messages


def test_several_runners_start_at_once_and_all_are_described(mlp_model, fake_backend_env, monkeypatch):
    monkeypatch.setenv("SPEEDSTER_RUN_BACKENDS", REGISTRATIONS)
    monkeypatch.setenv("SPEEDSTER_FAKE_START_DELAY_S", str(START_DELAY_S))
    one, _ = _start(mlp_model, NAMES[:1])
    run, messages = _start(mlp_model, NAMES)

    assert list(run.descriptions) == NAMES  # the order planning and the report follow
    assert all(d.available and list(d.devices) == ["cpu"] for d in run.descriptions.values()), run.descriptions
    assert sorted(messages) == sorted(f"starting the {name} runner (local)" for name in NAMES)
    single, together = one.phases_s["start_runners"], run.phases_s["start_runners"]
    assert single >= START_DELAY_S
    assert together < 0.6 * len(NAMES) * single, (single, together)
