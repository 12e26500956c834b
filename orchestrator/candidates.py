"""One candidate's lifecycle on its runner: load (compile), check outputs, benchmark a round, save, unload."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import numpy as np

from orchestrator.compare import Metric, compare, tolerance_for
from orchestrator.config import TUNED, RunConfig
from orchestrator.model_source import model_files
from orchestrator.planner import Candidate
from orchestrator.pool import CallFailure, RunnerPool
from orchestrator.report import CandidateResult
from orchestrator.trusted_torch import is_contained
from speedster_run.shared import tensors
from speedster_run.shared.errors import CATEGORY_NAMES
from speedster_run.runner.v1 import runner_pb2 as pb


@dataclasses.dataclass
class Slot:
    """A candidate, its report row, and where it is loaded (model id in which runner generation)."""

    candidate: Candidate
    result: CandidateResult
    model_id: str = ""
    generation: int = 0

    @property
    def alive(self) -> bool:
        return self.result.failure is None


def new_slot(candidate: Candidate) -> Slot:
    result = CandidateResult(
        name=candidate.name, backend=candidate.backend, precision=candidate.precision, variant=candidate.variant,
        format=candidate.format, device=candidate.device, is_original=candidate.is_original,
    )
    return Slot(candidate, result)


def reproduce_command(config: RunConfig, candidate: Candidate) -> str:
    """The CLI command that runs just this candidate's backend and precision again."""
    words = ["speedster-run", "--model", str(config.model), "--device", config.device,
             "--backends", candidate.backend, "--precision", candidate.precision,
             "--threads", str(config.effective_threads)]
    if config.timeout_s is not None:  # else each backend's own deadline, as in this run
        words += ["--timeout", f"{config.timeout_s:g}"]
    for name, (dims, dtype) in config.input_shapes.items():
        words += ["--input-shape", f"{name}={'x'.join(map(str, dims))}" + (f":{dtype}" if dtype else "")]
    for path in config.input_files:
        words += ["--inputs", str(path)]
    if config.metric_drop_ths is not None:
        words += ["--metric-drop-ths", f"{config.metric_drop_ths:g}"]
    if config.tune_budget_s is not None:
        words += ["--tune-budget", f"{config.tune_budget_s:g}"]
    for key, value in config.backend_options.get(candidate.backend, {}).items():
        words += ["--backend-option", f"{candidate.backend}:{key}={value}"]
    if config.trust_model:
        words.append("--trust-model")
    return shlex.join(words)


class CandidateDriver:
    """Drives candidates through their steps on the runners of a RunnerPool; every failure lands in the candidate's
    report row, with the command that starts the runner it failed in."""

    def __init__(self, config: RunConfig, pool: RunnerPool, sources: dict[str, pb.ModelSource],
                 samples: list[dict[str, np.ndarray]], metric: Metric = compare):
        self.config = config
        self.metric = metric
        self.pool = pool
        self.sources = sources  # model format -> where runners find it
        self.samples = samples
        self.calibration = [tensors.set_to_proto(s) for s in samples]
        self._uploads: dict[tuple[str, int, str], pb.ModelSource] = {}

    def _model_source(self, backend: str, generation: int, fmt: str) -> pb.ModelSource:
        """Where the runner finds the model: the shared path, or an upload made once per runner and format."""
        source = self.sources[fmt]
        if self.pool.in_process(backend):  # the caller's model needs no file
            return source
        if self.pool.sandbox.shares_filesystem:
            path = self.pool.sandbox.runner_path(backend, source.path)  # a container may mount it elsewhere
            return source if path == source.path else pb.ModelSource(path=path, sha256=source.sha256, format=fmt)
        key = (backend, generation, fmt)
        if key not in self._uploads:
            path = Path(source.path)
            names = model_files(path, fmt)
            deadline_s = self.config.call_timeout_s(backend)
            upload_id = self.pool.call(backend, lambda c: c.upload(path.parent, names, deadline_s))
            self._uploads[key] = pb.ModelSource(upload_id=upload_id, file_name=path.name, sha256=source.sha256,
                                                format=fmt)
        return self._uploads[key]

    def _call(self, slot: Slot, stage: str, action):
        """action(client) on the candidate's runner; None, with the row marked failed, when the call broke (timeout,
        crash) or the runner answered with an in-band failure."""
        try:
            answer = self.pool.call(slot.candidate.backend, action)
        except CallFailure as error:  # the runner may be gone: the failure carries its command
            self._fail(slot, error.category, error.message, stage, runner_log=error.runner_log,
                       runner_command=error.runner_command)
            return None
        if answer.HasField("failure") and answer.failure.category:
            self._fail(slot, CATEGORY_NAMES.get(answer.failure.category, "runtime"), answer.failure.message, stage,
                       detail=answer.failure.detail)
            return None
        return answer

    def _fail(self, slot: Slot, category: str, message: str, stage: str, runner_command: str | None = None,
              **extra: str) -> None:
        """Marks the row failed, with the commands that reproduce it: this candidate's run again, and the start of
        its runner (`runner_command`, or the live runner's when None)."""
        if runner_command is None:
            runner_command = self.pool.runner_command(slot.candidate.backend)
        slot.result.fail(category, message, stage, reproduce=reproduce_command(self.config, slot.candidate),
                         runner_command=runner_command, **extra)

    def load(self, slot: Slot) -> bool:
        """Compiles the candidate in its runner; False (and a failed row) when it failed."""
        candidate = slot.candidate
        try:
            generation = self.pool.generation(candidate.backend)
            source = self._model_source(candidate.backend, generation, candidate.format)
        except CallFailure as error:  # the runner would not start, or the upload broke
            slot.result.fail(error.category, error.message, "load", runner_log=error.runner_log,
                             runner_command=error.runner_command)
            return False
        request = pb.LoadRequest(
            model=source, device=candidate.device,
            precision=candidate.precision, variant=candidate.variant, threads=self.config.effective_threads,
            options=self.config.load_options(candidate.backend, candidate.variant, contained=self.config.trust_model
                                             and is_contained(self.pool.sandbox, candidate.backend)),
            # Only quantisation and tuning (for the shapes it tunes) need the sample inputs: other loads stay small.
            calibration=self.calibration if candidate.precision == "int8" or candidate.variant == TUNED else [],
        )
        deadline_s = (self.config.call_timeout_s(candidate.backend)
                      + (self.config.tune_budget_s or 0.0) * (candidate.variant == TUNED))
        answer = self._call(slot, "load", lambda c: c.load(request, deadline_s))
        if answer is None:
            return False
        slot.model_id, slot.generation = answer.model_id, generation
        result = slot.result
        if result.compile_s is None:
            result.compile_s = answer.compile_s
        result.details = dict(answer.details)
        result.runner_description = self.pool.runner_description(candidate.backend)
        process = self.pool.runner_process(candidate.backend)
        if process is not None and process.image:
            result.image, result.image_digest = process.image, process.image_digest
        result.peak_rss_mb = answer.peak_rss_bytes / 2**20
        return True

    def ensure_loaded(self, slot: Slot) -> bool:
        """Reloads a candidate whose runner was replaced after another candidate crashed it."""
        if slot.model_id and slot.generation == self.pool.generation(slot.candidate.backend):
            return True
        slot.result.notes.append("reloaded: its runner was restarted after another candidate failed")
        return self.load(slot)

    def outputs(self, slot: Slot) -> list[dict[str, np.ndarray]] | None:
        """Runs every sample; None (and a failed row) when a run fails."""
        results = []
        deadline_s = self.config.call_timeout_s(slot.candidate.backend)
        for sample in self.samples:
            answer = self._call(slot, "check", lambda c: c.infer(slot.model_id, sample, deadline_s))
            if answer is None:
                return None
            if answer.first_inference:
                slot.result.first_inference_s = answer.latency_ns / 1e9
            results.append(tensors.set_from_proto(answer.outputs))
        return results

    def check(self, slot: Slot, references: list[dict[str, np.ndarray]],
              outputs: list[dict[str, np.ndarray]] | None = None) -> bool:
        """Compares the candidate's outputs with the references; a drop past tolerance is an accuracy failure.
        `outputs`: the candidate's outputs when they were computed already (the original's, as the references)."""
        if outputs is None:
            outputs = self.outputs(slot)
        if outputs is None:
            return False
        comparison = self.metric(references, outputs, tolerance_for(slot.candidate.precision, self.config.metric_drop_ths))
        slot.result.comparison = comparison
        if not comparison.passed:
            self._fail(slot, "accuracy", comparison.problem, "check")
        return comparison.passed

    def benchmark_round(self, slot: Slot, round_budget_s: float, round_iterations: int | None) -> bool:
        """One interleaved round of measurement; the raw samples are appended to the candidate's row."""
        if not self.ensure_loaded(slot):
            return False
        timing = self.config.timing
        request = pb.BenchmarkRequest(
            model_id=slot.model_id,
            inputs=tensors.set_to_proto(self.samples[0]),
            warmup_iterations=timing.warmup_iterations,
            min_iterations=round_iterations or timing.window_iterations,
            max_iterations=round_iterations or 100_000,
            max_time_s=round_budget_s if round_iterations is None else 1e9,
            window_iterations=min(timing.window_iterations, round_iterations or timing.window_iterations),
            stability_pct=timing.stability_pct,
            stable_windows=timing.stable_windows,
        )
        deadline_s = ((round_budget_s if round_iterations is None else 0.0)
                      + self.config.call_timeout_s(slot.candidate.backend))
        answer = self._call(slot, "benchmark", lambda c: c.benchmark(request, deadline_s))
        if answer is None:
            return False
        slot.result.latencies_ns.append(list(answer.latencies_ns))
        slot.result.stable_rounds += int(answer.stable)
        if answer.first_inference_s and slot.result.first_inference_s is None:
            slot.result.first_inference_s = answer.first_inference_s
        slot.result.peak_rss_mb = max(slot.result.peak_rss_mb or 0.0, answer.peak_rss_bytes / 2**20)
        return True

    def unload(self, slot: Slot) -> None:
        """Frees the candidate's memory in its runner; a runner that is gone has nothing to free."""
        if not slot.model_id or not self.pool.is_current(slot.candidate.backend, slot.generation):
            return
        try:
            self.pool.call(slot.candidate.backend, lambda c: c.unload(slot.model_id))
        except CallFailure:
            pass
        slot.model_id = ""
