"""One optimisation run: read the model, freeze inputs and references, try every candidate, pick the winner."""

from __future__ import annotations

import dataclasses
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np

from orchestrator import inputs as sample_inputs
from orchestrator import model_source, planner
from orchestrator.candidates import CandidateDriver, Slot, new_slot
from orchestrator.compare import Metric, compare
from orchestrator.config import RunConfig
from orchestrator.errors import UserError
from orchestrator.in_process import CALLER, CallerModel, InProcessClient
from orchestrator.planner import Candidate
from orchestrator.pool import CallFailure, RunnerPool
from orchestrator.report import CandidateResult, RunReport
from orchestrator.sandboxes.base import Sandbox
from orchestrator.selection import pick_winner
from orchestrator.stats import speedup_interval, summarize
from runners import registry
from speedster_run.shared.files import sha256_file
from speedster_run.runner.v1 import runner_pb2 as pb

Progress = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


def select_backends(config: RunConfig) -> list[str]:
    """The backends to try, in registry order; an unknown name is a user error that lists the valid ones."""
    known = registry.names()
    for name in (config.backends or ()) + config.ignore_backends:
        if name not in known:
            raise UserError(f"unknown backend {name!r}; known backends: {', '.join(known)}")
    wanted = config.backends or tuple(known)
    return [name for name in known if name in wanted and name not in config.ignore_backends]


def defaulted_batch_notes(config: RunConfig, source: model_source.SourceModel) -> list[str]:
    """A batch size nobody chose is what gets measured: one line per input saying so, and how to choose another."""
    if config.input_files:
        return []
    notes = []
    for info in source.inputs:
        if info.shape and info.shape[0] is None and info.name not in config.input_shapes:
            rest = "x".join("?" if d is None else str(d) for d in info.shape[1:])
            notes.append(f"input {info.name}: its symbolic batch dimension is set to 1 (choose with --input-shape "
                         f"{info.name}=8{'x' + rest if rest else ''})")
    return notes


def prepare_samples(config: RunConfig, source: model_source.SourceModel) -> list[dict[str, np.ndarray]]:
    if config.input_files:
        return sample_inputs.load_samples(list(config.input_files), source.inputs, config.input_shapes)
    shapes = sample_inputs.concrete_shapes(source.inputs, config.input_shapes)
    return sample_inputs.random_samples(shapes, config.samples, config.seed)


def _orchestrator_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("speedster-run", "numpy", "onnx", "grpcio", "protobuf"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


class Run:
    """The steps of one run, in order; every candidate failure becomes a row, never an exception."""

    def __init__(self, config: RunConfig, source: model_source.SourceModel, samples: list[dict[str, np.ndarray]],
                 pool: RunnerPool, workdir: Path, progress: Progress, metric: Metric = compare,
                 baseline: CallerModel | None = None):
        self.config = config
        self.baseline = baseline
        self.metric = metric
        self.source = source
        self.samples = samples
        self.pool = pool
        self.workdir = workdir
        self.say = progress
        self.phases_s: dict[str, float] = {}
        self.descriptions: dict[str, pb.DescribeResponse] = {}
        self.rows: list[CandidateResult] = []
        self.slots: list[Slot] = []
        self.driver: CandidateDriver | None = None
        self.start_failures: dict[str, CallFailure] = {}  # backends whose runner would not start, twice
        self.not_applicable: list[CandidateResult] = []  # backends the catalog rules out: no runner started
        # The original's outputs on a CPU run: they are the references, and its own accuracy check reuses them.
        self._original_outputs: list[dict[str, np.ndarray]] | None = None

    def original_candidate(self) -> Candidate:
        """The speedups' baseline: the caller's own model in this process when the run has it (the Python API),
        else the original file in its runner."""
        if self.baseline is None:
            return planner.original_candidate(self.source.format, self.config.device)
        device = planner.device_for(self.config.device, ("cpu", "cuda")) or "cpu"
        return Candidate(CALLER, "fp32", "eager", self.source.format, device, True, label=self.baseline.name)

    def _phase(self, name: str, started: float) -> None:
        self.phases_s[name] = self.phases_s.get(name, 0.0) + time.perf_counter() - started

    def applicable(self, backends: list[str]) -> list[str]:
        """The backends worth a runner, planned from the catalog before anything starts: the others (a device kind
        they cannot serve, no format of this run they compile, untuned TVM on a CPU) get a "not applicable" row and
        one progress line. The original's runner always starts: it computes the references."""
        formats = planner.run_formats(self.source.format)
        needed = self.reference_backends()
        kept, reasons = [], []
        for backend in backends:
            reason = None if backend in needed else planner.not_applicable(backend, self.config, formats)
            if reason is None:
                kept.append(backend)
                continue
            row = CandidateResult(name=backend, backend=backend, precision="", variant="")
            row.fail("not applicable", reason, "plan")
            self.not_applicable.append(row)
            reasons.append(f"{backend} ({reason})")
        if reasons:
            self.say(f"not applicable, no runner started: {'; '.join(reasons)}")
        return kept

    def describe(self, backends: list[str]) -> None:
        """Starts the runners, several at once where the sandbox allows it (a start mostly waits on a runner
        importing its libraries), and keeps their descriptions in the backends' order."""
        started = time.perf_counter()
        width = max(1, min(len(backends), self.pool.sandbox.concurrent_starts))
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="runner-start") as starting:
            answers = list(starting.map(self._start_and_describe, backends))
        for backend, (description, failure) in zip(backends, answers):
            self.descriptions[backend] = description
            if failure is not None:
                self.start_failures[backend] = failure
        self._phase("start_runners", started)

    def _start_and_describe(self, backend: str) -> tuple[pb.DescribeResponse, CallFailure | None]:
        """The backend's description, and the failure when its runner failed to start twice."""
        kind, note = self.pool.sandbox.placement(backend)
        self.say(f"starting the {backend} runner ({kind}{': ' + note if note else ''})")
        try:
            return self._describe(backend), None
        except CallFailure as error:
            if error.category == "unavailable":  # no image, no engine: not a crash, and not tried twice
                reason, failure = f"runner cannot start: {error.message}", None
            else:
                reason, failure = f"runner failed to start twice: {error}", error
            return pb.DescribeResponse(backend=backend, available=False, unavailable_reason=reason), failure

    def _describe(self, backend: str) -> pb.DescribeResponse:
        """The runner's description; a runner that fails to start (or to answer) gets one more try, so that a
        one-off crash at start does not silently drop a backend from the run."""
        try:
            return self.pool.call(backend, lambda c: c.describe())
        except CallFailure as error:
            if error.category == "unavailable":  # no image, no engine: another try changes nothing
                raise
            self.say(f"the {backend} runner failed to start ({str(error)[:120]}); trying once more")
            return self.pool.call(backend, lambda c: c.describe())

    def check_device_seen(self) -> None:
        """After the runners described themselves: a device none of them sees is a configuration error (a remote
        runner's host may lack it too), not a run where every candidate fails."""
        if self.config.device == "cpu" or not self.descriptions:
            return
        kind = self.config.device.partition(":")[0]
        wanted = {kind} | ({"cuda", "gpu"} if kind in planner.ACCELERATOR_KINDS else set())
        if any(d.available and any(seen.partition(":")[0] in wanted for seen in d.devices)
               for d in self.descriptions.values()):
            return
        seen = "; ".join(f"{name}: {', '.join(d.devices) or 'unavailable'}" for name, d in self.descriptions.items())
        raise UserError(f"--device {self.config.device}: no runner sees such a device ({seen})")

    def model_files(self) -> tuple[dict[str, pb.ModelSource], str]:
        """Every format the runners can compile from: the original, and ONNX exported from a torch artifact."""
        sources = {self.source.format: pb.ModelSource(
            path=str(self.source.path.resolve()), sha256=self.source.sha256, format=self.source.format)}
        if self.source.format == model_source.ONNX:
            return sources, ""
        started = time.perf_counter()
        self.say("exporting the torch artifact to ONNX")
        from orchestrator.torch_artifacts import TorchExportError, export_onnx

        exporting = export_onnx
        if self.config.trust_model:  # the file is opened only by the torch runner, which exports it
            from orchestrator.trusted_torch import exporter

            exporting = exporter(self.pool, self.config, self.source.sha256)
        try:
            onnx_path = exporting(self.source.path, self.source.format, self.source.inputs, self.samples[0],
                                    self.workdir / "model.onnx")
        except TorchExportError as error:
            return sources, str(error)
        finally:
            self._phase("export", started)
        for exported in self.workdir.iterdir():  # runners in containers read it as another user
            exported.chmod(exported.stat().st_mode | (0o555 if exported.is_dir() else 0o444))
        sources[model_source.ONNX] = pb.ModelSource(path=str(onnx_path), sha256=sha256_file(onnx_path),
                                                    format=model_source.ONNX)
        return sources, ""

    def plan(self, sources: dict[str, pb.ModelSource], export_error: str) -> list[Slot]:
        candidates, skipped = planner.plan(self.descriptions, {f: str(s.path) for f, s in sources.items()},
                                           self.config)
        original = self.original_candidate()
        # The original file in its runner is the original again (the caller's model, run as exported): not a
        # candidate of its own.
        runner_original = planner.original_candidate(self.source.format, self.config.device)
        same = [c for c in candidates if (c.backend, c.precision, c.variant, c.format) ==
                (runner_original.backend, runner_original.precision, runner_original.variant, runner_original.format)]
        candidates = [original] + [c for c in candidates if c not in same]
        for skip in skipped:
            if skip.backend in self.start_failures:
                skip = dataclasses.replace(skip, category="crash")
            row = CandidateResult(name=f"{skip.backend}" + (f"/{skip.precision}-{skip.variant}" if skip.precision else ""),
                                  backend=skip.backend, precision=skip.precision, variant=skip.variant)
            message = f"{skip.reason}: {export_error}" if skip.category == "export" and export_error else skip.reason
            row.fail(skip.category, message, "plan")
            self.rows.append(row)
        self.rows.extend(self.not_applicable)
        return [new_slot(c) for c in candidates]

    def references(self, driver: CandidateDriver, original: Slot) -> list[dict[str, np.ndarray]] | None:
        """Reference outputs from the original model on the CPU in fp32, computed once. On a CPU run they are the
        original's own outputs, which are then its accuracy check too: the original is inferred once."""
        self.say(f"[1/{len(self.slots)}] {original.candidate.name} (original): computing reference outputs")
        if self.config.device == "cpu":
            if not driver.load(original):
                return None
            self._original_outputs = driver.outputs(original)
            return self._original_outputs
        reference = new_slot(planner.original_candidate(self.source.format, "cpu"))
        loaded = driver.load(reference)
        outputs = driver.outputs(reference) if loaded else None
        driver.unload(reference)
        if outputs is None:
            original.result.failure = reference.result.failure
            original.result.status = "failed"
        elif not driver.load(original):
            return None
        return outputs

    def execute(self, backends: list[str]) -> RunReport:
        started = time.perf_counter()
        backends = self.applicable(backends + [b for b in self.reference_backends() if b not in backends])
        # The runners start while the torch artifact is exported: both mostly wait (on imports, on torch.export).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-starts") as background:
            starting = background.submit(self.describe, backends)
            try:
                sources, export_error = self.model_files()
            except BaseException:
                starting.exception()  # the starts finish (the pool stops those runners); the export's error wins
                raise
            starting.result()  # a user error at start (a remote runner's token) is raised here
        self.check_device_seen()
        slots = self.plan(sources, export_error)
        for note in defaulted_batch_notes(self.config, self.source):  # said once nothing can be a user error
            self.say(note)
        original = slots[0]
        driver = self.driver = CandidateDriver(self.config, self.pool, sources, self.samples, self.metric)
        self.slots = slots

        phase = time.perf_counter()
        references = self.references(driver, original)
        if references is None:
            for slot in slots[1:]:
                slot.result.fail("unavailable", "not tried: the original model failed, so there is no reference "
                                 "to check outputs against", "plan")
        else:
            driver.check(original, references, outputs=self._original_outputs)
            for index, slot in enumerate(slots[1:], start=2):
                self.say(f"[{index}/{len(slots)}] {slot.candidate.name}: compiling")
                if driver.load(slot):
                    self.say(f"[{index}/{len(slots)}] {slot.candidate.name}: compiled in "
                             f"{slot.result.compile_s:.1f} s, checking outputs")
                    if not driver.check(slot, references):
                        driver.unload(slot)
                if slot.result.failure:
                    self.say(f"[{index}/{len(slots)}] {slot.candidate.name}: {slot.result.failure.category}: "
                             f"{slot.result.failure.message[:100]}")
        self._phase("compile_and_check", phase)

        phase = time.perf_counter()
        self.benchmark([s for s in slots if s.alive])
        self._phase("benchmark", phase)
        for slot in slots:
            if slot.alive:
                slot.result.status = "ok"
                slot.result.versions = self.versions(slot.candidate.backend)
        self.rows = [s.result for s in slots] + self.rows
        self.score(original.result)
        winner, tie_with, verdict = pick_winner(self.rows, original.result, self.config.original_may_win)
        if self.start_failures:
            verdict += (f" Not in the running: {', '.join(self.start_failures)} (runner failed to start twice; "
                        "see the crash rows).")
        report = RunReport(
            config=self.config.to_dict(),
            environment=self.environment(),
            source={"path": str(self.source.path), "format": self.source.format, "sha256": self.source.sha256,
                    "inputs": [vars(i) for i in self.source.inputs], "outputs": [vars(o) for o in self.source.outputs],
                    "exported_onnx": self.source.format != model_source.ONNX and model_source.ONNX in sources,
                    "export_error": export_error,
                    "benchmarked_shapes": {name: list(array.shape) for name, array in self.samples[0].items()}
                    if self.samples else {}},
            candidates=self.rows, winner=winner, verdict=verdict, tie_with=tie_with,
        )
        self._phase("total_inside_run", started)
        report.phases_s = self.phases_s
        return report

    def reference_backends(self) -> list[str]:
        """Backends the run needs whatever the user picked: the original's runner computes the reference outputs,
        unless the caller's model (in this process) does it on the CPU."""
        if self.baseline is not None and self.config.device == "cpu":
            return []
        return [planner.ORIGINAL[self.source.format][0]]

    def versions(self, backend: str) -> dict[str, str]:
        if backend == CALLER and self.baseline is not None:
            return dict(self.baseline.versions)
        return dict(self.descriptions[backend].versions)

    def benchmark(self, slots: list[Slot]) -> None:
        """Interleaved rounds: every candidate measures once per round, in an order that rotates each round,
        so that a slow drift of the machine spreads over all candidates instead of penalising one."""
        timing = self.config.timing
        rounds = max(1, timing.rounds)
        round_budget_s = timing.time_budget_s / rounds
        round_iterations = None if timing.iterations is None else max(1, -(-timing.iterations // rounds))
        hopeless: set[int] = set()
        for round_index in range(rounds):
            live = [s for s in slots if s.alive and id(s) not in hopeless]
            if not live:
                return
            shift = round_index % len(live)
            for position, slot in enumerate(live[shift:] + live[:shift], start=1):
                left = ""
                if round_iterations is None:  # a time budget per round: what remains is known (at most)
                    turns_left = len(live) - position + 1 + (rounds - round_index - 1) * len(live)
                    seconds = turns_left * round_budget_s
                    left = f", about {seconds:.0f} s left" if seconds >= 10 else f", about {seconds:.1f} s left"
                self.say(f"benchmark round {round_index + 1}/{rounds}: candidate {position}/{len(live)} "
                         f"{slot.candidate.name}{left}")
                if not self.driver.benchmark_round(slot, round_budget_s, round_iterations):
                    self.say(f"{slot.candidate.name}: {slot.result.failure.category}: {slot.result.failure.message}")
            hopeless |= self._hopeless([s for s in live if s.alive], round_index + 1)

    def _hopeless(self, slots: list[Slot], rounds_done: int) -> set[int]:
        """Candidates so far behind the fastest that more rounds cannot change the verdict (TimingConfig's
        hopeless_*): they keep the rounds they have (their row says so), and the run does not spend minutes timing
        them again."""
        timing = self.config.timing
        medians = {id(s): float(np.median(s.result.latencies_ns[-1])) / 1e6 for s in slots if s.result.latencies_ns}
        if not medians:
            return set()
        best = min(medians.values())
        behind = {key for key, median in medians.items()
                  if median > timing.hopeless_factor * best and median > timing.hopeless_min_ms}
        for slot in slots:
            if id(slot) in behind:
                slot.result.notes.append(f"measured in {rounds_done} round(s) only: over {timing.hopeless_factor:g}x "
                                         "slower than the fastest candidate")
        return behind

    def score(self, original: CandidateResult) -> None:
        for row in self.rows:
            if row.latencies_ns and row.status == "ok":
                row.stats = summarize(row.latencies_ns)
        if original.stats is None:
            return
        for row in self.rows:
            if row.stats is None:
                continue
            if row is original:
                row.speedup = 1.0
                continue
            point, low, high = speedup_interval(original.latencies_ns, row.latencies_ns, seed=self.config.seed)
            row.speedup, row.speedup_ci = point, (low, high)

    def environment(self) -> dict:
        hosts = {name: dict(d.host) for name, d in self.descriptions.items() if d.host}
        return {
            "host": next(iter(hosts.values()), {}),
            "orchestrator": _orchestrator_versions(),
            "backends": {name: dict(d.versions) for name, d in self.descriptions.items()},
            "runner_hosts": hosts,
            "threads": self.config.effective_threads,
            "sandbox": self.pool.sandbox.name,
            "runner_sandboxes": {name: self.pool.sandbox.placement(name)[0] for name in self.descriptions},
            **self.pool.sandbox.environment(),
            "command": " ".join(sys.argv),
        }


def optimize(config: RunConfig, progress: Progress = _quiet, sandbox: Sandbox | None = None,
             metric: Metric = compare, baseline: CallerModel | None = None) -> RunReport:
    """Runs the whole optimisation. Raises UserError before starting anything when the input is bad.
    `metric` judges each candidate's outputs against the references (default: `compare`); `baseline` is the
    caller's own model, run in this process as the original (the Python API passes the user's module)."""
    started = time.perf_counter()
    if config.trust_model:  # a torch file is read by the torch runner in its container, never here
        from orchestrator.trusted_torch import open_model

        source = open_model(config, progress)
    else:
        source = model_source.open_model(config.model, config.input_shapes)
    samples = prepare_samples(config, source)
    backends = select_backends(config)
    if config.sandbox != "remote":
        from orchestrator.host_devices import check_present

        check_present(config.device)
    if sandbox is None:
        from orchestrator.sandboxes.factory import make_sandbox

        original = planner.ORIGINAL[source.format][0]
        sandbox = make_sandbox(config, backends + ([original] if original not in backends else []))
    pool = RunnerPool(sandbox, config.effective_threads)
    if baseline is not None:
        pool.attach(CALLER, InProcessClient(baseline, config.effective_threads), baseline.description)
    workdir = Path(tempfile.mkdtemp(prefix="speedster-run-model-"))
    workdir.chmod(0o755)  # runners in containers read the export as another user
    try:
        model = source.path.resolve()  # the model and its external data, then where exports go
        sandbox.share(model.parent, [model.parent / name for name in model_source.model_files(model, source.format)])
        sandbox.share(workdir)
        run = Run(config, source, samples, pool, workdir, progress, metric, baseline)
        report = run.execute(backends)
        if config.save_dir is not None and report.winner is not None:
            from orchestrator.artifacts import save_winner

            progress(f"saving {report.winner} to {config.save_dir}")
            try:
                save_winner(run, report)
            except CallFailure as error:
                report.save_error = f"could not save {report.winner}: {error}"
    finally:
        pool.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report.wall_s = time.perf_counter() - started
    return report
