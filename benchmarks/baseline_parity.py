"""Is the baseline what the user runs? The user's nn.Module, the exported program's module, and the torch runner's
eager candidate (the CLI's original row for a .pt2), all on the same model, measured side by side.

    python benchmarks/baseline_parity.py [--model resnet18] [--threads 2] [--repeats 5] [--seconds 3]

Prints each way's median latency (median of the interleaved rounds, and their range) and its ratio to the user's
module called in this process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.runner_client import RunnerClient  # noqa: E402
from orchestrator.sandboxes.local import LocalSandbox  # noqa: E402
from runners import tensors  # noqa: E402
from speedster_run.shared.measure import TimingPlan, measure  # noqa: E402
from speedster_run.runner.v1 import runner_pb2 as pb  # noqa: E402


def main() -> None:
    import torch

    from orchestrator import zoo
    from speedster_run.shared.torch_io import load_export

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="baseline-parity-"))
    pt2 = zoo.save(args.model, workdir / f"{args.model}.pt2")
    module = zoo.build(args.model)[0]
    exported = load_export(pt2)[0].module()
    array = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    x = torch.from_numpy(array)
    plan = TimingPlan(warmup_iterations=5, min_iterations=10**6, max_iterations=10**6, max_time_s=args.seconds)

    sandbox = LocalSandbox()
    runner = sandbox.start("torch", args.threads, 120)
    client = RunnerClient(runner.target)
    loaded = client.load(pb.LoadRequest(model=pb.ModelSource(path=str(pt2), format="torch_export"), device="cpu",
                                        precision="fp32", variant="eager", threads=args.threads), 600)
    assert not loaded.failure.category, loaded.failure.message

    def in_process(fn):
        def run() -> list[int]:
            with torch.inference_mode():
                return measure(lambda: fn(x), plan).latencies_ns
        return run

    def via_runner() -> list[int]:
        answer = client.benchmark(pb.BenchmarkRequest(
            model_id=loaded.model_id, inputs=tensors.set_to_proto({"input": array}), warmup_iterations=5,
            min_iterations=plan.min_iterations, max_iterations=plan.max_iterations, max_time_s=args.seconds,
            window_iterations=10, stability_pct=1.0, stable_windows=10**6), 600)
        return list(answer.latencies_ns)

    ways = {"your nn.Module, this process": in_process(module),
            "ExportedProgram.module(), this process": in_process(exported),
            "torch runner, eager (the CLI's original)": via_runner}
    medians: dict[str, list[float]] = {way: [] for way in ways}
    try:
        for repeat in range(args.repeats):
            order = list(ways)
            order = order[repeat % len(order):] + order[:repeat % len(order)]
            for way in order:
                medians[way].append(statistics.median(ways[way]()) / 1e6)
            print(f"round {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    finally:
        client.close()
        sandbox.close()
    base = medians["your nn.Module, this process"]
    print(f"\n{args.model}, batch 1, CPU, {args.threads} threads, {args.repeats} interleaved rounds of "
          f"{args.seconds:g} s each\n")
    print("| way | median ms | range of round medians | ratio to your module (range) |")
    print("|---|---|---|---|")
    for way, values in medians.items():
        ratios = [v / b for v, b in zip(values, base)]
        print(f"| {way} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
