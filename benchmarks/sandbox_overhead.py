"""What the sandbox costs: ONNX Runtime and OpenVINO called in-process next to the same backends through their runners.

    python benchmarks/sandbox_overhead.py [--model resnet50] [--threads 2] [--repeats 5] [--seconds 4]

Prints, for each backend, the median latency in-process, measured by its runner (Benchmark RPC) and as seen by the
orchestrator per Infer call (gRPC round trip and tensor copies included), measured side by side in interleaved
rounds; then the whole speedster-run wall time against the sum of the candidates' own compile and benchmark times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.runner_client import RunnerClient  # noqa: E402
from orchestrator.sandboxes.local import LocalSandbox  # noqa: E402
from runners import tensors  # noqa: E402
from speedster_run.shared.measure import TimingPlan, measure  # noqa: E402
from speedster_run.runner.v1 import runner_pb2 as pb  # noqa: E402


def export_model(name: str, workdir: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """The zoo model as a .pt2 artifact and the ONNX file the orchestrator would export from it."""
    from orchestrator import zoo
    from orchestrator.model_source import open_model
    from orchestrator.torch_artifacts import export_onnx

    pt2 = zoo.save(name, workdir / f"{name}.pt2")
    source = open_model(pt2, {})
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)}
    return pt2, export_onnx(pt2, source.format, source.inputs, feeds, workdir / f"{name}.onnx"), feeds


def in_process_runners(onnx_path: Path, threads: int, feeds):
    """Plain library calls, configured as the runners configure them."""
    import onnxruntime as ort
    import openvino as ov

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return {
        "onnxruntime": lambda: session.run(None, feeds),
        "openvino": lambda: request.infer(feeds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    parser.add_argument("--skip-cli", action="store_true", help="skip the whole-run orchestration measurement")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-overhead-"))
    pt2, onnx_path, feeds = export_model(args.model, workdir)
    plan = TimingPlan(warmup_iterations=10, min_iterations=10**6, max_iterations=10**6, max_time_s=args.seconds)

    local = in_process_runners(onnx_path, args.threads, feeds)
    sandbox = LocalSandbox()
    remote = {}
    for backend in local:
        runner = sandbox.start(backend, args.threads, 120)
        client = RunnerClient(runner.target)
        loaded = client.load(pb.LoadRequest(model=pb.ModelSource(path=str(onnx_path), format="onnx"), device="cpu",
                                            precision="fp32", threads=args.threads), 600)
        assert not loaded.failure.category, loaded.failure.message
        remote[backend] = (client, loaded.model_id)

    def via_runner(backend: str) -> list[int]:
        client, model_id = remote[backend]
        answer = client.benchmark(pb.BenchmarkRequest(
            model_id=model_id, inputs=tensors.set_to_proto(feeds), warmup_iterations=plan.warmup_iterations,
            min_iterations=plan.min_iterations, max_iterations=plan.max_iterations, max_time_s=plan.max_time_s,
            window_iterations=10, stability_pct=1.0, stable_windows=10**6), 600)
        return list(answer.latencies_ns)

    def via_infer(backend: str) -> list[int]:
        client, model_id = remote[backend]
        return measure(lambda: client.infer(model_id, feeds, 60), plan).latencies_ns

    ways = {
        "in-process": lambda b: measure(local[b], plan).latencies_ns,
        "runner (Benchmark)": via_runner,
        "runner (Infer RPC)": via_infer,
    }
    medians: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        order = list(ways.items())
        order = order[repeat % len(order):] + order[:repeat % len(order)]  # rotate: drift hits every way alike
        for backend in local:
            for way, measure_way in order:
                medians.setdefault((backend, way), []).append(statistics.median(measure_way(backend)) / 1e6)
        print(f"round {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    sandbox.close()

    print(f"\n{args.model}, batch 1, CPU, {args.threads} threads, {args.repeats} interleaved rounds of "
          f"{args.seconds:g} s per measurement\n")
    print("| backend | way | median ms (median of rounds) | min-max of round medians | overhead vs in-process |")
    print("|---|---|---|---|---|")
    for backend in local:
        base = medians[(backend, "in-process")]
        for way in ways:
            values = medians[(backend, way)]
            ratios = [v / b - 1 for v, b in zip(values, base)]
            overhead = "" if way == "in-process" else (
                f"{statistics.median(ratios) * 100:+.1f}% (rounds {min(ratios) * 100:+.1f}% .. {max(ratios) * 100:+.1f}%)")
            print(f"| {backend} | {way} | {statistics.median(values):.2f} | {min(values):.2f}-{max(values):.2f} "
                  f"| {overhead} |")

    if args.skip_cli:
        return
    report_path = workdir / "report.json"
    command = [sys.executable, "-m", "orchestrator.cli", "--model", str(pt2), "--threads", str(args.threads),
               "--backends", "onnxruntime,openvino,torch", "--report", str(report_path)]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    wall_s = time.perf_counter() - started
    report = json.loads(report_path.read_text())
    compile_s = sum(c["compile_s"] or 0.0 for c in report["candidates"])
    timed_s = sum(sum(sum(r) for r in c["latencies_ns"]) for c in report["candidates"]) / 1e9
    print(f"\nspeedster-run --model {args.model}.pt2 --threads {args.threads} --backends onnxruntime,openvino,torch")
    print("| wall s | candidates' compile s | candidates' timed runs s | rest (export, runner start, reference, "
          "checks, warm-up, gRPC) s |")
    print("|---|---|---|---|")
    print(f"| {wall_s:.1f} | {compile_s:.1f} | {timed_s:.1f} | {wall_s - compile_s - timed_s:.1f} |")
    print("phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["phases_s"].items()))


if __name__ == "__main__":
    main()
