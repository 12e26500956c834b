"""Shared fixtures: tiny ONNX models built in code, and the environment that registers the test-only fake backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_BACKEND = "fake=tests.fakes.fake_backend:FakeBackend"
FAST = ["--time-budget", "0.3", "--rounds", "2", "--samples", "2", "--warmup", "2"]  # CLI runs that check behaviour


def cli(*args, env=None) -> subprocess.CompletedProcess:
    """`speedster-run ARGS` in a fresh interpreter (env: the whole environment, default this one)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env=env)


def assert_user_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """Exit status 2 with one line (no traceback) containing `fragment`."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert fragment in lines[0], lines[0]


def save_onnx(model, path: Path) -> Path:
    """Saves with an IR version onnxruntime 1.31 reads (onnx 1.23 writes 14 by default)."""
    import onnx

    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def mlp_onnx(path: Path, inputs: int = 256, outputs: int = 64, batch="batch") -> Path:
    """Gemm + Relu with a symbolic batch dim: big enough for quantisation to apply, small enough to be instant."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((outputs, inputs)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal((outputs,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, outputs])],
        [weight, bias],
    )
    return save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def mystery_onnx(path: Path) -> Path:
    """Valid ONNX that no runtime implements (an op of an unknown domain): the original model cannot run."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], domain="com.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    return save_onnx(helper.make_model(graph, opset_imports=opsets), path)


@pytest.fixture
def mlp_model(tmp_path: Path) -> Path:
    return mlp_onnx(tmp_path / "mlp.onnx")


@pytest.fixture
def fake_backend_env(monkeypatch):
    """Registers the fake backend for this process and the runners it starts; returns a setter for its variants."""
    monkeypatch.setenv("SPEEDSTER_RUN_BACKENDS", FAKE_BACKEND)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))

    def variants(*names: str) -> None:
        monkeypatch.setenv("SPEEDSTER_FAKE_VARIANTS", ",".join(names))

    variants("ok")
    return variants
