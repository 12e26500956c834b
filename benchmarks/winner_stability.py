"""Does speedster-run name the same winner run after run? Repeats whole runs and prints each one's top two.

    python benchmarks/winner_stability.py [--model resnet50] [--runs 5] [--threads 2] [-- extra speedster-run args]

The claim it checks: whenever the top two differ by more than 10%, every run names the same winner.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--metric-drop-ths", default="0.1")
    parser.add_argument("extra", nargs="*", help="more speedster-run arguments (after --)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="winner-stability-"))
    model = workdir / f"{args.model}.pt2"
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "example-model", args.model, str(model)], cwd=REPO,
                   check=True, capture_output=True)
    winners = []
    print("| run | winner | fastest | median ms | runner-up | median ms | gap | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for run in range(1, args.runs + 1):
        report_path = workdir / f"report-{run}.json"
        command = [sys.executable, "-m", "orchestrator.cli", "--model", str(model), "--threads", str(args.threads),
                   "--metric-drop-ths", args.metric_drop_ths, "--report", str(report_path), *args.extra]
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        report = json.loads(report_path.read_text())
        ranked = sorted((c for c in report["candidates"] if c["stats"]), key=lambda c: c["stats"]["median_ms"])
        first, second = ranked[0], ranked[1]
        gap = second["stats"]["median_ms"] / first["stats"]["median_ms"] - 1
        winners.append(report["winner"])
        print(f"| {run} | {report['winner']} | {first['name']} | {first['stats']['median_ms']:.2f} | {second['name']} | "
              f"{second['stats']['median_ms']:.2f} | {gap * 100:.1f}% | {report['wall_s']:.0f} |", flush=True)
    counts = Counter(winners)
    print(f"\nwinners: {dict(counts)}; same winner in {counts.most_common(1)[0][1]}/{args.runs} runs")


if __name__ == "__main__":
    main()
