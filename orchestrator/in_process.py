"""The baseline as the user runs it: a model that lives in this process, measured as a runner measures.

A runner's original is the exported program in another process; the user's own `nn.Module`, called in their own
process, is what every speedup must be against. `InProcessClient` answers the calls the orchestrator makes of a runner
(load, infer, benchmark, unload) for such a model, so the run treats it like any other candidate: same timing plan,
same thread count, same pinning as the runners get, and its inputs prepared before the clock starts, as the user's
are (they already hold tensors).
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

from speedster_run.shared import tensors
from speedster_run.shared.errors import failure
from speedster_run.shared.measure import TimingPlan, measure
from speedster_run.runner.v1 import runner_pb2 as pb

CALLER = "caller"  # the pool's key for the in-process model: not a backend, so no runner is ever started for it
MODEL_ID = "caller"


class CallerModel(Protocol):
    """The user's model as they call it: `prepare` turns numpy inputs into what it takes (outside the clock),
    `call` runs it once and returns when the work is done, `outputs` turns its result into named numpy arrays."""

    name: str  # its row in the report, e.g. "torch/fp32-eager (your module)"
    description: str  # where and how it runs, for the report
    versions: dict[str, str]  # its framework's versions

    def prepare(self, feeds: dict[str, np.ndarray]) -> Any: ...

    def call(self, prepared: Any) -> Any: ...

    def outputs(self, result: Any) -> dict[str, np.ndarray]: ...

    def threads(self, count: int) -> contextlib.AbstractContextManager: ...


def _tasks() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[None]:
    """Every thread of this process on the first `threads` usable cores, as the sandboxes pin runners; restored
    afterwards. Nothing changes when `threads` covers every core."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not 0 < threads < len(allowed):
        yield
        return
    saved = {}
    for task in _tasks():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            saved[task] = os.sched_getaffinity(task)
            os.sched_setaffinity(task, allowed[:threads])
    try:
        yield
    finally:
        for task, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(task, cpus)


def _failure(error: Exception) -> pb.Failure:
    message = f"{type(error).__name__}: {error}".splitlines()[0][:500]
    category = "oom" if isinstance(error, MemoryError) else "runtime"
    return failure(category, message, "".join(traceback.format_exception(error)))


class InProcessClient:
    """A RunnerClient look-alike for a model in this process; its failures travel in-band, as a runner's do."""

    def __init__(self, model: CallerModel, threads: int):
        self.model = model
        self.threads = threads
        self.target = "in-process"
        self._has_run = False

    @contextlib.contextmanager
    def _conditions(self) -> Iterator[None]:
        with pinned(self.threads), self.model.threads(self.threads):
            yield

    def load(self, request: pb.LoadRequest, timeout_s: float) -> pb.LoadResponse:
        return pb.LoadResponse(model_id=MODEL_ID, compile_s=0.0, details={"runs": self.model.description})

    def infer(self, model_id: str, inputs: dict, timeout_s: float) -> pb.InferResponse:
        try:
            with self._conditions():
                prepared = self.model.prepare(inputs)
                begin = time.perf_counter_ns()
                result = self.model.call(prepared)
                latency_ns = time.perf_counter_ns() - begin
                outputs = self.model.outputs(result)
        except Exception as error:  # the user's model failed: a row, as any candidate's failure is
            return pb.InferResponse(failure=_failure(error))
        first, self._has_run = not self._has_run, True
        return pb.InferResponse(outputs=tensors.set_to_proto(outputs), latency_ns=latency_ns, first_inference=first)

    def benchmark(self, request: pb.BenchmarkRequest, timeout_s: float) -> pb.BenchmarkResponse:
        try:
            with self._conditions():
                prepared = self.model.prepare(tensors.set_from_proto(request.inputs))
                timing = measure(lambda: self.model.call(prepared), TimingPlan.from_request(request))
        except Exception as error:
            return pb.BenchmarkResponse(failure=_failure(error))
        return pb.BenchmarkResponse(latencies_ns=timing.latencies_ns, stable=timing.stable, clock="monotonic_ns")

    def unload(self, model_id: str, timeout_s: float = 30.0) -> None:
        """Nothing to free: the model is the user's."""

    def close(self) -> None:
        """Nothing to close: no channel, no process."""
