"""What optimize_model prints at the end (Speedster's summary, then the per-candidate table) and what
store_latencies writes."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

from tabulate import tabulate

from orchestrator.report import RunReport


def time_calls(call: Callable[[], Any], budget_s: float = 1.0, max_calls: int = 50) -> float:
    """Median seconds of `call` over a short loop (after one warm-up call)."""
    call()
    samples = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < max_calls and (len(samples) < 3 or time.perf_counter() < deadline):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return samples[len(samples) // 2]


def _mb(size: int | None) -> str:
    return "" if size is None else f"{size / 2**20:.2f} MB"


def speedster_table(report: RunReport, batch_size: int, original_size: int | None, optimized_size: int | None,
                    shapes: dict[str, dict[str, float]], as_returned=None) -> str:
    """Speedster's summary: original against the winner, with the measured drop and where it runs. With
    `as_returned` (an AsReturned) the latencies are those the caller gets, both models called from this process."""
    rows = {r.name: r for r in report.candidates}
    original = next(r for r in report.candidates if r.is_original)
    winner = rows[report.winner]
    before, after = original.stats.median_ms / 1e3, winner.stats.median_ms / 1e3
    if as_returned is not None:
        before, after = as_returned.original_ms / 1e3, as_returned.optimized_ms / 1e3
    table = [
        ["backend", original.name, winner.name, ""],
        ["latency", f"{before:.4f} sec/batch", f"{after:.4f} sec/batch", f"{before / after:.2f}x"],
        ["throughput", f"{batch_size / before:.2f} data/sec", f"{batch_size / after:.2f} data/sec",
         f"{before / after:.2f}x"],
        ["model size", _mb(original_size), _mb(optimized_size),
         f"{original_size / optimized_size:.2f}x" if original_size and optimized_size else ""],
        ["metric drop", "", f"{winner.comparison.drop:.4g}" if winner.comparison else "", ""],
        ["techniques", "", winner.precision, ""],
    ]
    if as_returned is not None:
        table.insert(2, ["of which the call", "", f"{as_returned.call_overhead_ms / 1e3:.4f} sec/batch", ""])
    for label, measured in shapes.items():  # dynamic models: the winner at min / opt / max sizes
        table.append([f"latency at {label}", f"{measured['original']:.4f} sec/batch",
                      f"{measured['optimized']:.4f} sec/batch", f"{measured['original'] / measured['optimized']:.2f}x"])
    host = report.environment.get("host", {}).get("cpu") or platform.processor() or platform.machine()
    return f"[speedster-run results on {host}]\n" + tabulate(
        table, headers=["Metric", "Original Model", "Optimized Model", "Improvement"], disable_numparse=True)


def write_latencies(report: RunReport, directory: Path, model_name: str) -> Path:
    """store_latencies=True: every candidate's latency (or failure) as JSON in the working directory."""
    path = directory / f"latencies_{model_name}_{time.strftime('%Y%m%d-%H%M%S')}.json"
    candidates = {}
    for row in report.candidates:
        candidates[row.name] = {
            "backend": row.backend, "precision": row.precision, "variant": row.variant, "status": row.status,
            "is_original": row.is_original,
            "median_ms": row.stats.median_ms if row.stats else None,
            "p90_ms": row.stats.p90_ms if row.stats else None,
            "latencies_ms": [ns / 1e6 for rnd in row.latencies_ns for ns in rnd],
            "metric_drop": row.comparison.drop if row.comparison else None,
            "failure": {"category": row.failure.category, "message": row.failure.message} if row.failure else None,
        }
    data = {"winner": report.winner, "verdict": report.verdict, "candidates": candidates,
            "environment": report.environment}
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path
