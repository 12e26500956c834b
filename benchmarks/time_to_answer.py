"""How long speedster-run takes to answer, phase by phase, on three models, next to a saved baseline.

    python benchmarks/time_to_answer.py [--cases demo,onnx_cnn,bert] [--out DIR]
        [--baseline benchmarks/baselines/time_to_answer.json] [--save-baseline PATH]

Cases (CPU, this machine's cores):
- demo: the quick start's command (resnet18 .pt2, --metric-drop-ths 0.1, --time-budget 3, the default sandbox);
- onnx_cnn: a small ONNX CNN with a dynamic batch, default options;
- bert: BERT-base's encoder (random weights, sequence 128, `speedster-run example-model bert-base`), as the demo.

For each: wall time, each phase from report.json, the candidates benchmarked, pruned and failed, and the winner;
with --baseline, the same figures of the saved run beside them (the figures of main before a change: run this on
that commit with --save-baseline first). Each case is one whole `speedster-run` process, timed from outside.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = ("demo", "onnx_cnn", "bert")


def onnx_cnn(path: Path) -> Path:
    """Conv-Relu-Conv-Relu-GlobalAveragePool-Gemm on 3x32x32 images with a symbolic batch (no torch needed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [weight("w1", 32, 3, 3, 3), weight("b1", 32), weight("w2", 64, 32, 3, 3), weight("b2", 64),
         weight("w3", 10, 64), weight("b3", 10)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every runtime here reads
    onnx.save(model, str(path))
    return path


def prepare(case: str, directory: Path) -> tuple[Path, list[str]]:
    """The model file of a case and the options of its run."""
    demo_options = ["--device", "cpu", "--metric-drop-ths", "0.1", "--time-budget", "3"]
    if case == "onnx_cnn":
        return onnx_cnn(directory / "small_cnn.onnx"), ["--device", "cpu"]
    name = {"demo": "resnet18", "bert": "bert-base"}[case]
    model = directory / f"{name}.pt2"
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "example-model", name, str(model)], check=True,
                   cwd=REPO, capture_output=True)
    return model, demo_options


def summarize(report: dict, wall_s: float) -> dict:
    rows = report["candidates"]
    pruned = [r["name"] for r in rows if any("round(s) only" in n or "not benchmarked further" in n
                                              for n in r.get("notes", []))]
    winner = next((r for r in rows if r["name"] == report.get("winner")), None)
    return {
        "wall_s": round(wall_s, 1),
        "phases_s": {k: round(v, 1) for k, v in report.get("phases_s", {}).items()},
        "benchmarked": sum(1 for r in rows if r.get("stats")),
        "pruned": pruned,
        "failed": {r["name"]: r["failure"]["category"] for r in rows if r.get("failure")},
        "winner": report.get("winner"),
        "winner_ms": round(winner["stats"]["median_ms"], 3) if winner and winner.get("stats") else None,
    }


def run_case(case: str, directory: Path, out: Path) -> dict:
    model, options = prepare(case, directory)
    report_path = out / f"{case}.json"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--model", str(model), *options, "--quiet",
                             "--report", str(report_path)], cwd=REPO, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    if not report_path.exists():
        return {"wall_s": round(wall_s, 1), "error": result.stderr.strip().splitlines()[-1:]}
    return summarize(json.loads(report_path.read_text()), wall_s)


def show(case: str, now: dict, before: dict | None) -> None:
    print(f"\n== {case}")
    for key in ("wall_s", "phases_s", "benchmarked", "pruned", "failed", "winner", "winner_ms", "error"):
        if key in now or (before and key in before):
            was = f"   (baseline: {before.get(key)})" if before else ""
            print(f"  {key:<12} {now.get(key)}{was}")
    if before and now.get("wall_s") and before.get("wall_s"):
        print(f"  wall time: {now['wall_s'] / before['wall_s']:.2f}x the baseline's; winner "
              f"{'unchanged' if now.get('winner') == before.get('winner') else 'CHANGED'}")
    phases = now.get("phases_s", {})
    total = now.get("wall_s") or 0.0
    for phase, seconds in phases.items():
        if phase not in ("compile_and_check", "benchmark", "total_inside_run") and total and seconds > 0.15 * total:
            print(f"  note: {phase} takes {seconds / total:.0%} of the wall time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=None, help="where the reports go (default: a temporary folder)")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--save-baseline", type=Path, default=None)
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    baseline = json.loads(args.baseline.read_text()) if args.baseline else {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="speedster-run-tta-") as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        for case in cases:
            results[case] = run_case(case, Path(scratch), out)
            show(case, results[case], baseline.get(case))
    if args.save_baseline:
        args.save_baseline.parent.mkdir(parents=True, exist_ok=True)
        args.save_baseline.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
