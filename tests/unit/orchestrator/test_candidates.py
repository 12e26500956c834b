"""CandidateDriver with real local runners of the fake backend: each step fills the candidate's row, every failure
records the commands that reproduce it, deadlines follow --timeout or the backend's own; and the reproduce command
reads back as the same run."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from orchestrator.candidates import CandidateDriver, new_slot, reproduce_command
from orchestrator.cli import build_config, run_parser
from orchestrator.config import RunConfig, TimingConfig
from orchestrator.planner import Candidate
from orchestrator.pool import RunnerPool
from orchestrator.runner_client import RunnerClient
from orchestrator.sandboxes.local import LocalSandbox
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.shared import catalog


def _fake(variant: str) -> Candidate:
    return Candidate("fake", "fp32", variant, "onnx", "cpu")


@pytest.fixture
def driver_for(mlp_model):
    """driver_for(config) -> a CandidateDriver on local runners for mlp_model with two random samples."""
    pools = []

    def make(config: RunConfig) -> CandidateDriver:
        pool = RunnerPool(LocalSandbox(), threads=1)
        pools.append(pool)
        rng = np.random.default_rng(0)
        samples = [{"x": rng.standard_normal((2, 256)).astype(np.float32)} for _ in range(2)]
        sources = {"onnx": pb.ModelSource(path=str(mlp_model), format="onnx")}
        return CandidateDriver(config, pool, sources, samples)

    yield make
    for pool in pools:
        pool.close()


def test_a_candidate_goes_through_load_check_benchmark_and_unload(driver_for, mlp_model, fake_backend_env):
    fake_backend_env("ok", "wrong")
    driver = driver_for(RunConfig(model=mlp_model, sandbox="local", timing=TimingConfig(warmup_iterations=1)))
    ok, wrong = new_slot(_fake("ok")), new_slot(_fake("wrong"))
    assert driver.load(ok) and driver.load(wrong)
    assert ok.model_id and ok.result.compile_s is not None
    assert ok.result.runner_description.startswith("local process pid ")
    references = driver.outputs(ok)  # the "ok" fake computes with ONNX Runtime: its outputs are the truth

    assert driver.check(ok, references) and ok.result.comparison.passed
    assert not driver.check(wrong, references)
    failure = wrong.result.failure
    assert failure.category == "accuracy" and failure.stage == "check" and wrong.result.status == "failed"
    assert "--backends fake" in failure.reproduce
    assert "-m runners.server --backend fake" in failure.runner_command  # the runner it ran in, still alive

    assert driver.benchmark_round(ok, 0.2, None) and driver.benchmark_round(ok, 0.0, 5)
    assert len(ok.result.latencies_ns) == 2 and len(ok.result.latencies_ns[1]) == 5
    driver.unload(ok)
    assert ok.model_id == ""


def test_a_crash_records_the_dead_runners_command_and_the_other_candidate_is_reloaded(
        driver_for, mlp_model, fake_backend_env):
    fake_backend_env("ok", "abort")
    driver = driver_for(RunConfig(model=mlp_model, sandbox="local"))
    ok, abort = new_slot(_fake("ok")), new_slot(_fake("abort"))
    assert driver.load(ok)
    command = driver.pool.runner_command("fake")
    assert not driver.load(abort)
    failure = abort.result.failure
    assert failure.category == "crash" and failure.stage == "load" and "SIGABRT" in failure.message
    assert failure.runner_command == command  # the runner's, although the pool has discarded it since

    assert driver.ensure_loaded(ok)  # its runner died with the abort: loaded again in a new one
    assert any("reloaded" in note for note in ok.result.notes)
    assert driver.outputs(ok) is not None


class _Deadlines:
    """Records the deadline of every Load and Infer while the real calls go on."""

    def __init__(self, monkeypatch):
        self.load: list[float] = []
        self.infer: list[float] = []
        original_load, original_infer = RunnerClient.load, RunnerClient.infer

        def load(client, request, timeout_s):
            self.load.append(timeout_s)
            return original_load(client, request, timeout_s)

        def infer(client, model_id, inputs, timeout_s):
            self.infer.append(timeout_s)
            return original_infer(client, model_id, inputs, timeout_s)

        monkeypatch.setattr(RunnerClient, "load", load)
        monkeypatch.setattr(RunnerClient, "infer", infer)


@pytest.mark.parametrize("timeout_s", [None, 42.0])
def test_deadlines_are_the_timeout_given_else_the_backends_own(driver_for, mlp_model, fake_backend_env, monkeypatch,
                                                              timeout_s):
    fake_backend_env("ok", "tuned")
    deadlines = _Deadlines(monkeypatch)
    driver = driver_for(RunConfig(model=mlp_model, sandbox="local", timeout_s=timeout_s, tune_budget_s=5.0))
    plain, tuned = new_slot(_fake("ok")), new_slot(_fake("tuned"))
    assert driver.load(plain) and driver.load(tuned) and driver.outputs(plain)
    expected = catalog.compile_timeout_s("fake") if timeout_s is None else timeout_s
    assert deadlines.load == [expected, expected + 5.0]  # a tuned candidate also gets its tuning budget
    assert deadlines.infer == [expected, expected]
    assert RunConfig(model=mlp_model).call_timeout_s("tensorrt") == catalog.get("tensorrt").compile_timeout_s


@pytest.mark.parametrize("timeout_s", [None, 90.0])
def test_the_reproduce_command_reads_back_as_the_same_candidates_run(tmp_path, timeout_s):
    inputs = tmp_path / "inputs.npz"
    config = RunConfig(model=tmp_path / "m.onnx", device="cpu", threads=1, timeout_s=timeout_s,
                       input_shapes={"x": ((1, 256), "float32")}, input_files=(inputs,), metric_drop_ths=0.1,
                       tune_budget_s=30.0, backend_options={"openvino": {"k": "v"}, "tvm": {"other": "1"}},
                       trust_model=True)
    words = shlex.split(reproduce_command(config, Candidate("openvino", "int8", "nncf", "onnx", "cpu")))
    assert words[0] == "speedster-run"
    again = build_config(run_parser().parse_args(words[1:]))
    assert again.model == config.model and again.device == config.device and again.threads == config.threads
    assert again.backends == ("openvino",) and again.precisions == ("int8",)
    assert again.timeout_s == timeout_s  # absent when not given: the backend's own deadline again
    assert again.input_shapes == config.input_shapes
    assert again.input_files == (Path(inputs),) and again.metric_drop_ths == 0.1 and again.tune_budget_s == 30.0
    assert again.backend_options == {"openvino": {"k": "v"}}  # only the candidate's backend
    assert again.trust_model
