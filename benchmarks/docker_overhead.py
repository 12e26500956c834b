"""What a hardened container costs at inference: the same candidate in a docker runner and in a local runner, measured
in interleaved rounds so that the machine's drift hits both alike.

    python benchmarks/docker_overhead.py [--model resnet50] [--threads 2] [--repeats 5] [--seconds 3]

Per candidate (onnxruntime fp32, openvino fp32 on the exported ONNX, torch eager on the .pt2), prints the median of
the round medians in each sandbox and the docker/local ratio per round. Needs a Docker engine and the images.
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

from benchmarks.sandbox_overhead import export_model  # noqa: E402
from orchestrator.runner_client import RunnerClient  # noqa: E402
from orchestrator.sandboxes.docker import DockerSandbox  # noqa: E402
from orchestrator.sandboxes.local import LocalSandbox  # noqa: E402
from runners import tensors  # noqa: E402
from speedster_run.runner.v1 import runner_pb2 as pb  # noqa: E402

CANDIDATES = (("onnxruntime", "onnx", "default"), ("openvino", "onnx", "default"), ("torch", "torch_export", "eager"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="docker-overhead-"))
    workdir.chmod(0o755)
    pt2, onnx_path, feeds = export_model(args.model, workdir)
    for path in (pt2, onnx_path):
        path.chmod(0o644)
    paths = {"onnx": onnx_path, "torch_export": pt2}
    sandboxes = {"docker": DockerSandbox(), "local": LocalSandbox()}
    sandboxes["docker"].share(workdir)
    loaded = {}
    try:
        for name, sandbox in sandboxes.items():
            for backend, fmt, variant in CANDIDATES:
                runner = sandbox.start(backend, args.threads, 300)
                client = RunnerClient(runner.target)
                path = sandbox.runner_path(backend, str(paths[fmt]))
                answer = client.load(pb.LoadRequest(model=pb.ModelSource(path=path, format=fmt), device="cpu",
                                                    precision="fp32", variant=variant, threads=args.threads), 600)
                assert not answer.failure.category, answer.failure.message
                loaded[(name, backend)] = (client, answer.model_id)

        def benchmark(name: str, backend: str) -> float:
            client, model_id = loaded[(name, backend)]
            answer = client.benchmark(pb.BenchmarkRequest(
                model_id=model_id, inputs=tensors.set_to_proto(feeds), warmup_iterations=5, min_iterations=10**6,
                max_iterations=10**6, max_time_s=args.seconds, window_iterations=10, stability_pct=1.0,
                stable_windows=10**6), 600)
            return float(np.median(answer.latencies_ns)) / 1e6

        medians: dict[tuple[str, str], list[float]] = {}
        for repeat in range(args.repeats):
            order = list(sandboxes) if repeat % 2 == 0 else list(reversed(sandboxes))
            for backend, _, _ in CANDIDATES:
                for name in order:
                    medians.setdefault((name, backend), []).append(benchmark(name, backend))
            print(f"round {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    finally:
        for client, _ in loaded.values():
            client.close()
        for sandbox in sandboxes.values():
            sandbox.close()

    print(f"\n{args.model}, batch 1, CPU, {args.threads} threads, {args.repeats} interleaved rounds of "
          f"{args.seconds:g} s per measurement\n")
    print("| candidate | docker median ms | local median ms | docker/local per round (median, min..max) |")
    print("|---|---|---|---|")
    for backend, _, variant in CANDIDATES:
        docker, local = medians[("docker", backend)], medians[("local", backend)]
        ratios = [d / v for d, v in zip(docker, local)]
        print(f"| {backend}/fp32-{variant} | {statistics.median(docker):.2f} | {statistics.median(local):.2f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}..{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
