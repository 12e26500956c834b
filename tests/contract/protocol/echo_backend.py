"""A test backend that needs no library: it echoes its inputs, or crashes the runner as its variant says.

Registered in tests through SPEEDSTER_RUN_BACKENDS (see ECHO_BACKENDS). It carries every protocol dtype, so the tensor
codec can be checked end to end over gRPC independently of what a real runtime accepts (ONNX Runtime has no numpy
bfloat16). Variants: "ok" echoes; "sleep" sleeps SLEEP_S per run and records how many runs overlapped; "segv",
"abort" and "exit3" kill the runner while loading (a real null dereference, abort(3), _exit(3)); "slow_load" takes
SLOW_LOAD_S to load; "hang" never returns from loading (only for runners in their own process: nothing can end it).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

import numpy as np

from runners.backends.base import Artifact, Availability, Backend, LoadedModel, LoadSpec, Offer

ECHO_BACKENDS = ("echo=tests.contract.protocol.echo_backend:EchoBackend,"
                 "bad_probe=tests.contract.protocol.echo_backend:BadProbeBackend")
SLEEP_S = 0.2
SLOW_LOAD_S = 1.0
VARIANTS = ("ok", "sleep", "segv", "abort", "exit3", "slow_load", "hang")


class _Concurrency:
    """How many runs are in progress now, and the most seen at once (shared by every echo model)."""

    lock = threading.Lock()
    active = 0
    most = 0


class _EchoModel(LoadedModel):
    def __init__(self, spec: LoadSpec):
        self.variant = spec.variant
        self.inputs = []
        self.outputs = []
        self.details = {"variant": spec.variant}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with _Concurrency.lock:
            _Concurrency.active += 1
            _Concurrency.most = max(_Concurrency.most, _Concurrency.active)
        try:
            if self.variant == "sleep":
                time.sleep(SLEEP_S)
            return {name: value.copy() for name, value in feeds.items()}
        finally:
            with _Concurrency.lock:
                _Concurrency.active -= 1

    def save(self, directory: Path) -> Artifact:
        (directory / "echo.txt").write_text(self.variant)
        return Artifact("echo", "echo.txt", "fp32", self.variant, {}, ("echo.txt",))


class EchoBackend(Backend):
    name = "echo"

    def probe(self) -> Availability:
        offers = tuple(Offer("fp32", v, ("cpu",), ("onnx",)) for v in VARIANTS)
        return Availability(available=True, versions={"echo": "1"}, devices=("cpu",), offers=offers)

    def load(self, spec: LoadSpec) -> LoadedModel:
        if spec.variant == "segv":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if spec.variant == "abort":
            os.abort()
        if spec.variant == "exit3":
            os._exit(3)
        if spec.variant == "slow_load":
            time.sleep(SLOW_LOAD_S)
        if spec.variant == "hang":
            threading.Event().wait()  # a compiler stuck for good; it ignores gRPC's cancellation
        return _EchoModel(spec)


class BadProbeBackend(Backend):
    """Imports fine, but its probe raises: the runner must describe it as unavailable, not crash."""

    name = "bad_probe"

    def probe(self) -> Availability:
        raise RuntimeError("driver mismatch")

    def load(self, spec: LoadSpec) -> LoadedModel:
        raise AssertionError("never loaded: unavailable")
