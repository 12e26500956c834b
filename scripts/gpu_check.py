"""The steps of scripts/gpu-check.sh (read its header): the environment, a speedster-run per model, the GPU tests,
and the summary, each step bounded in time so that the whole check ends well inside a 10-minute lease.

    python scripts/gpu_check.py OUT_DIR --mode gpu|dry
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# mode -> device, models (zoo names), extra options, seconds allowed per model run
PLANS = {
    "gpu": ("cuda:0", ("resnet50", "bert-base"), ["--time-budget", "2", "--rounds", "3"], 240),
    "dry": ("cpu", ("tiny_cnn", "mlp"), ["--time-budget", "0.3", "--rounds", "2", "--samples", "2",
                                         "--backends", "onnxruntime,torch"], 240),
}
TESTS_S = 150


def _run(command: list[str], log: Path, timeout_s: float) -> tuple[int, float]:
    """Runs with stdout and stderr into `log`; (exit status, seconds); 124 when it ran out of time."""
    started = time.perf_counter()
    with log.open("w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        try:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n(gpu-check: stopped after {timeout_s:.0f} s)\n")
            code = 124
    return code, time.perf_counter() - started


def environment(out: Path) -> None:
    lines = [f"python {sys.version.split()[0]}"]
    if shutil.which("nvidia-smi"):
        lines.append(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip())
    try:
        import torch

        lines.append(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
                     f"devices: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}")
    except ImportError:
        lines.append("torch: not installed")
    for package in ("onnx", "onnxruntime", "onnxscript", "grpc", "google.protobuf", "tensorrt", "openvino"):
        try:
            module = __import__(package, fromlist=["__version__"])
            lines.append(f"{package} {getattr(module, '__version__', '?')}")
        except ImportError:
            lines.append(f"{package}: not installed")
    (out / "environment.txt").write_text("\n".join(lines) + "\n")


def winner_line(name: str, report_path: Path, code: int, seconds: float) -> str:
    if not report_path.exists():
        return f"| {name} | exit {code} | {seconds:.0f} s | no report |"
    report = json.loads(report_path.read_text())
    rows = {c["name"]: c for c in report["candidates"]}
    winner = rows.get(report.get("winner") or "")
    measured = sum(1 for c in rows.values() if c.get("stats"))
    if winner is None:
        return f"| {name} | exit {code} | {seconds:.0f} s | no winner ({measured} measured) |"
    return (f"| {name} | exit {code} | {seconds:.0f} s | `{winner['name']}` {winner['stats']['median_ms']:.3g} ms, "
            f"{winner['speedup']:.3g}x the original ({measured} of {len(rows)} candidates measured) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mode", choices=tuple(PLANS), default="gpu")
    args = parser.parse_args()
    device, models, options, per_model_s = PLANS[args.mode]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.md"
    summary.write_text(f"## GPU check ({args.mode}: {device})\n\n")
    environment(out)
    lines = ["| model | exit | wall | winner |", "|---|---|--:|---|"]
    with tempfile.TemporaryDirectory(prefix="speedster-run-gpu-check-") as scratch:  # models stay out of OUT_DIR
        for name in models:
            model = Path(scratch) / f"{name}.pt2"
            log = out / f"{name}.log"
            code, _ = _run([sys.executable, "-m", "orchestrator.zoo", name, str(model)], log, 120)
            if code != 0:
                lines.append(f"| {name} | exit {code} | | the model could not be built (see {log.name}) |")
                continue
            report = out / f"{name}.json"
            code, seconds = _run([sys.executable, "-m", "orchestrator.cli", "--model", str(model), "--device", device,
                                  "--metric-drop-ths", "0.1", "--sandbox", "local", "--report", str(report),
                                  "--summary-md", str(summary), *options], out / f"{name}.run.log", per_model_s)
            (out / f"{name}.log").write_text(log.read_text() + (out / f"{name}.run.log").read_text())
            (out / f"{name}.run.log").unlink()
            lines.append(winner_line(name, report, code, seconds))
    code, seconds = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs",
                          "tests/backends"], out / "gpu-tests.log", TESTS_S)
    tail = (out / "gpu-tests.log").read_text().strip().splitlines()[-1:]
    lines.append(f"| GPU tests (pytest -m gpu) | exit {code} | {seconds:.0f} s | {tail[0] if tail else ''} |")
    with summary.open("a") as file:
        file.write("\n### Overview\n\n" + "\n".join(lines) + "\n")
    print(summary.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
