"""A misbehaving backend for testing the orchestrator's handling of crashes, hangs and wrong outputs.

It computes with ONNX Runtime and then misbehaves as its variant says. It is evidence about the orchestrator only,
never about a real backend. Offered variants come from SPEEDSTER_FAKE_VARIANTS (comma-separated, default "ok").
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from runners.backends.base import Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer, TensorInfo
from speedster_run.shared.errors import CandidateError

VARIANTS = ("ok", "wrong", "abort", "hang", "oom", "abort_in_run", "slow", "fail_compile", "memory_hog")


def _memory_limit_bytes() -> int | None:
    """This process's cgroup memory limit (v2 or v1), None when there is none: a hog is only safe inside one."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**50:  # v1 writes a huge number for "no limit"
            return int(text)
    return None


class _FakeModel(LoadedModel):
    def __init__(self, spec: LoadSpec):
        import onnxruntime as ort

        self.variant = spec.variant
        self.path = spec.model_path
        self.session = ort.InferenceSession(str(spec.model_path), providers=["CPUExecutionProvider"])
        self.inputs = [TensorInfo(i.name, "float32", tuple(None for _ in i.shape)) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, "float32", tuple(None for _ in o.shape)) for o in self.session.get_outputs()]
        self.details = {"variant": spec.variant}
        self.runs = 0

    def run(self, feeds):
        self.runs += 1
        if self.variant == "abort_in_run" and self.runs > 2:
            os.abort()
        if self.variant == "slow":
            time.sleep(0.005)
        names = [o.name for o in self.outputs]
        outputs = dict(zip(names, self.session.run(names, feeds)))
        if self.variant == "wrong":
            outputs = {name: value + np.ones_like(value) for name, value in outputs.items()}
        return outputs

    def save(self, directory: Path) -> Artifact:
        shutil.copy(self.path, directory / "model.onnx")
        return Artifact("onnx", "model.onnx", "fp32", self.variant, {}, ("model.onnx",))


def _crash_at_start() -> None:
    """SPEEDSTER_FAKE_START_CRASHES=COUNTER_FILE:N: the first N runners to probe abort before serving (a runner that
    dies at start, as grpc's fork handlers once made real ones do)."""
    setting = os.environ.get("SPEEDSTER_FAKE_START_CRASHES")
    if not setting:
        return
    path, _, limit = setting.rpartition(":")
    counter = Path(path)
    crashes = int(counter.read_text() or 0) if counter.exists() else 0
    if crashes < int(limit):
        counter.write_text(str(crashes + 1))
        os.abort()


class FakeBackend(Backend):
    name = "fake"

    def probe(self) -> Availability:
        _crash_at_start()
        # SPEEDSTER_FAKE_START_DELAY_S: a runner as slow to start as one importing a large library.
        time.sleep(float(os.environ.get("SPEEDSTER_FAKE_START_DELAY_S", "0")))
        variants = [v for v in os.environ.get("SPEEDSTER_FAKE_VARIANTS", "ok").split(",") if v]
        offers = tuple(Offer("fp32", v, ("cpu",), ("onnx",), f"fake: {v}") for v in variants)
        return Availability(available=True, versions={"fake": "1"}, devices=("cpu",), offers=offers)

    def load(self, spec: LoadSpec) -> LoadedModel:
        if spec.variant == "abort":
            os.abort()
        if spec.variant == "hang":
            while True:
                time.sleep(1)
        if spec.variant == "oom":
            raise MemoryError("fake allocation of 1 TiB failed")
        if spec.variant == "memory_hog":
            # Touches 4x the container's memory limit, so that the kernel's OOM killer (not Python) stops it.
            limit = _memory_limit_bytes()
            if limit is None:
                raise CandidateError("runtime", "memory_hog runs only under a cgroup memory limit (a container)")
            hog = np.ones(4 * limit // 8)
            raise CandidateError("runtime", f"allocated {hog.nbytes} bytes past a {limit}-byte limit unharmed")
        if spec.variant == "fail_compile":
            raise CandidateError("compile", "fake compiler rejected the model", "fake detail")
        return _FakeModel(spec)
