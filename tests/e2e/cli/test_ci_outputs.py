"""What a CI pipeline reads from a run: JUnit XML, a Markdown step summary, and `compare`, the regression gate, each
checked against real runs (ONNX Runtime on small models; the fake backend only where a candidate must fail)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from orchestrator.regression_gate import IncomparableReports, compare_reports
from tests.conftest import FAST, REPO, assert_user_error, cli, mlp_onnx

JUNIT_SCHEMA = REPO / "tests" / "data" / "junit.xsd"
# Gemm 1024x1024 (about 0.1 ms here) against 4096x4096: 16x the work, a slowdown far past any noise.
MID, BIG = dict(inputs=1024, outputs=1024), dict(inputs=4096, outputs=4096)


def _run(model: Path, report: Path, *extra) -> None:
    result = cli("--model", model, "--backends", "onnxruntime", "--report", report, *FAST, *extra)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Real reports: the mid-size model twice (a pair that differs only by noise) and the big one once."""
    directory = tmp_path_factory.mktemp("reports")
    mid, big = mlp_onnx(directory / "mid.onnx", **MID), mlp_onnx(directory / "big.onnx", **BIG)
    paths = {name: directory / f"{name}.json" for name in ("mid", "mid_again", "big")}
    _run(mid, paths["mid"])
    _run(mid, paths["mid_again"])
    _run(big, paths["big"])
    return paths


def test_compare_passes_a_pair_that_differs_within_the_noise(reports):
    """The same model run twice. The threshold is the allowance for what two runs differ by beyond their own
    noise: on a shared 2-core machine where other jobs start and stop between the runs, that was up to 41% here."""
    result = cli("compare", reports["mid"], reports["mid_again"], "--max-regression", "0.6")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "winner: onnxruntime/fp32 -> onnxruntime/fp32" in result.stdout and "OK: " in result.stdout


def test_compare_fails_a_real_regression_and_passes_the_improvement(reports, tmp_path):
    result = cli("compare", reports["mid"], reports["big"], "--json", tmp_path / "gate.json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "REGRESSION" in result.stdout and "the model changed (sha256 differs)" in result.stdout
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["regression"] and gate["winner"]["low"] > 1.25
    faster = cli("compare", reports["big"], reports["mid"])
    assert faster.returncode == 0, faster.stdout + faster.stderr
    assert gate["winner"]["ratio"] > 1.0 and "OK: the winner changed by -" in faster.stdout


def test_compare_refuses_what_it_cannot_compare(reports, tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert_user_error(cli("compare", garbage, reports["mid"]), "not a readable JSON report")
    assert_user_error(cli("compare", tmp_path / "missing.json", reports["mid"]), "no such file")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"some": "thing"}))
    assert_user_error(cli("compare", reports["mid"], other), "not a speedster-run report")
    on_gpu = json.loads(reports["mid_again"].read_text())
    on_gpu["config"]["device"] = "cuda:0"
    with pytest.raises(IncomparableReports, match="different devices"):
        compare_reports(json.loads(reports["mid"].read_text()), on_gpu)


def _report(latencies_ns: list[list[int]], name: str = "onnxruntime/fp32") -> dict:
    median = sorted(x for r in latencies_ns for x in r)[sum(map(len, latencies_ns)) // 2] / 1e6
    return {"report_version": 1, "config": {"device": "cpu"}, "source": {"sha256": "same"}, "environment": {},
            "winner": name, "candidates": [{"name": name, "latencies_ns": latencies_ns,
                                            "stats": {"median_ms": median}}]}


def test_a_slowdown_past_the_threshold_but_within_the_noise_passes():
    """Medians 10% apart, but samples so spread that the interval reaches under the 5% threshold."""
    base = _report([[1_000_000, 1_500_000, 2_000_000, 500_000, 1_000_000, 1_600_000] * 5])
    new = _report([[1_100_000, 1_650_000, 2_200_000, 550_000, 1_100_000, 1_760_000] * 5])
    comparison = compare_reports(base, new, 0.05)
    assert comparison.winner.ratio == pytest.approx(1.1, rel=0.01)
    assert comparison.winner.low < 1.05 and not comparison.regression
    assert "past the 5% threshold but within the noise" in comparison.verdict


def test_junit_and_markdown_summary_of_a_run_with_failures(tmp_path, fake_backend_env):
    """One candidate wins, one fails its accuracy check (a failure), one backend is not applicable on a CPU (a skip)."""
    import xmlschema  # a dev dependency: installed wherever the tests run, never skipped
    fake_backend_env("ok", "wrong")
    model = mlp_onnx(tmp_path / "mlp.onnx")
    junit, summary = tmp_path / "out" / "junit.xml", tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    result = cli("--model", model, "--backends", "onnxruntime,fake,tensorrt", "--junit", junit, "--summary-md",
                 summary, *FAST)
    assert result.returncode == 0, result.stderr

    xmlschema.XMLSchema(str(JUNIT_SCHEMA)).validate(str(junit))
    suite = ET.parse(junit).getroot()
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    winner = next(p.get("value") for p in suite.iter("property") if p.get("name") == "winner")
    assert f"{winner} (winner)" in cases and "median" in cases[f"{winner} (winner)"].findtext("system-out")
    assert cases["fake/fp32-wrong"].find("failure").get("type") == "accuracy"
    skipped = [name for name, case in cases.items() if case.find("skipped") is not None]
    assert skipped and all(name.startswith("tensorrt") for name in skipped)
    assert suite.get("tests") == str(len(cases)) and suite.get("failures") == "1"

    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended, as GITHUB_STEP_SUMMARY is
    assert "| candidate | precision | median ms |" in text and f"| `{winner}` |" in text
    assert "`fake/fp32-wrong`: **accuracy**" in text and "\n**Winner" in text
