"""How long a runner takes to answer SERVING: a hardened container per backend next to a local process.

    python benchmarks/docker_start.py [--backends onnxruntime,openvino,torch] [--repeats 5] [--threads 2]

Starts each backend's runner `repeats` times in each sandbox, alternating, and prints the median and range of
start-to-SERVING (the container created and started, the interpreter up, the backend probed) and of stop.
Needs a Docker engine and the images (`speedster-run images build ...`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.sandboxes.docker import DockerSandbox  # noqa: E402
from orchestrator.sandboxes.local import LocalSandbox  # noqa: E402


def _timed(sandbox, backend: str, threads: int) -> tuple[float, float]:
    started = time.perf_counter()
    runner = sandbox.start(backend, threads, 300.0)
    ready_s = time.perf_counter() - started
    started = time.perf_counter()
    sandbox.stop(runner)
    return ready_s, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="onnxruntime,openvino,torch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    docker, local = DockerSandbox(), LocalSandbox()
    docker.engine()  # connecting (and any leftover cleanup) is not part of a start
    print(f"{'backend':<12} {'sandbox':<7} {'start-to-SERVING s (median, min-max)':<38} {'stop s (median)'}")
    try:
        for backend in args.backends.split(","):
            times: dict[str, list[tuple[float, float]]] = {"docker": [], "local": []}
            _timed(docker, backend, args.threads)  # first start: page cache warm for both, as in a real run's 2nd
            _timed(local, backend, args.threads)
            for _ in range(args.repeats):
                times["docker"].append(_timed(docker, backend, args.threads))
                times["local"].append(_timed(local, backend, args.threads))
            for name, samples in times.items():
                ready = [r for r, _ in samples]
                stop = statistics.median(s for _, s in samples)
                print(f"{backend:<12} {name:<7} {statistics.median(ready):6.2f} ({min(ready):.2f}-{max(ready):.2f})"
                      f"{'':<22} {stop:.2f}")
    finally:
        docker.close()
        local.close()


if __name__ == "__main__":
    main()
