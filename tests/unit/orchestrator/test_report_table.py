"""The table people read at the end of a run: it fits the terminal, numbers keep three significant digits, failures
are numbered under it in full, and backends that could not take part take one line."""

from __future__ import annotations

import json
import os

from orchestrator.formatting import significant
from orchestrator.report import CandidateResult, RunReport, table
from orchestrator.stats import summarize
from tests.conftest import FAST, cli, mlp_onnx

LONG = ("the compiler gave up on node /layer4/conv2 because its weights are shared with a node of another "
        "subgraph, which this version cannot split")


def _row(name: str, median_ns: int, **extra) -> CandidateResult:
    row = CandidateResult(name=name, backend=name.split("/")[0], precision="fp32", variant="default", status="ok",
                          **extra)
    row.latencies_ns = [[median_ns - 1000, median_ns, median_ns + 1000]]
    row.stats = summarize(row.latencies_ns)
    return row


def _report() -> RunReport:
    original = _row("onnxruntime/fp32", 250_000, is_original=True, speedup=1.0)
    fast = _row("openvino/fp32", 18_600, speedup=13.44, speedup_ci=(13.1, 13.9))
    broken = CandidateResult(name="tvm/fp32", backend="tvm", precision="fp32", variant="default")
    broken.fail("compile", LONG, "load")
    missing = [CandidateResult(name=n, backend=n, precision="", variant="") for n in ("tensorrt", "xla", "neuron")]
    for row in missing:
        row.fail("unavailable", "needs a CUDA GPU", "plan")
    return RunReport(config={}, environment={}, source={}, candidates=[original, fast, broken, *missing],
                     winner="openvino/fp32", verdict="")


def test_three_significant_digits_at_every_scale():
    assert [significant(v) for v in (0.018612, 0.25, 1.4937, 21.47, 1234.5)] == ["0.0186", "0.250", "1.49", "21.5",
                                                                                 "1234"]


def test_the_table_fits_narrow_terminals_dropping_columns_by_priority():
    for width in (80, 100, 120):
        text = table(_report(), width=width)
        assert max(len(line) for line in text.splitlines()) <= width, (width, text)
        assert "openvino/fp32" in text and "0.0186" in text and "13.4x [13.1-13.9]" in text and "WINNER" in text
    wide, narrow = table(_report(), width=200), table(_report(), width=80)
    assert "max abs err" in wide and "max abs err" not in narrow and "median ms" in narrow


def test_failures_are_numbered_in_full_and_unavailable_backends_share_one_line():
    text = table(_report(), width=100)
    assert "compile [1]" in text
    note = text[text.index("[1] tvm/fp32"):]
    assert " ".join(note.split()).startswith(f"[1] tvm/fp32: compile: {LONG}")  # whole, wrapped, not cut
    unavailable = [line for line in text.splitlines() if line.startswith("unavailable:")]
    assert unavailable == ["unavailable: tensorrt, xla, neuron: needs a CUDA GPU"]
    assert not any(line.startswith("tensorrt ") for line in text.splitlines())  # no row of their own


def test_a_real_run_prints_within_columns_100(tmp_path, fake_backend_env):
    fake_backend_env("ok", "fail_compile")
    model = mlp_onnx(tmp_path / "mlp.onnx")
    env = dict(os.environ, COLUMNS="100")
    report = tmp_path / "report.json"
    result = cli("--model", model, "--backends", "onnxruntime,openvino,fake,tensorrt", "--report", report, *FAST,
                 env=env)
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 100, result.stdout
    assert "[1] fake/" in result.stdout and "not applicable: tensorrt: serves cuda only, not cpu" in result.stdout
    # the shapes measured are on record, and a batch size nobody chose is said
    assert "input x: its symbolic batch dimension is set to 1" in result.stderr
    assert json.loads(report.read_text())["source"]["benchmarked_shapes"] == {"x": [1, 256]}
