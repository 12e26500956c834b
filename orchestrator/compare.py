"""Output comparison against the frozen reference, with precision-aware default tolerances."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

# Default bound on the drop (mean |candidate - reference| / mean |reference|) per precision, used when the user
# gives no --metric-drop-ths. fp32 backends differ only by summation order (~1e-6 here); the bound is loose enough
# for that and tight enough to catch a wrong kernel. Reduced precisions lose digits by design.
DEFAULT_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 3e-2, "int8": 1e-1}


@dataclasses.dataclass(frozen=True)
class OutputError:
    """How far one output is from its reference, worst case over the samples."""

    name: str
    max_abs: float
    max_rel: float  # max |diff| / (|ref| + eps): explodes near zero, reported but not gated on
    drop: float  # mean |diff| / mean |ref| (for integer or bool outputs: the fraction of elements that differ)


@dataclasses.dataclass(frozen=True)
class Comparison:
    passed: bool
    drop: float  # worst output's drop
    tolerance: float
    outputs: list[OutputError]
    problem: str = ""  # why it failed, one line

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def tolerance_for(precision: str, metric_drop_ths: float | None) -> float:
    """The user's threshold wins; otherwise the precision's default."""
    if metric_drop_ths is not None:
        return metric_drop_ths
    return DEFAULT_TOLERANCE.get(precision, DEFAULT_TOLERANCE["int8"])


def _align(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pairs outputs by name, or by position when a backend renamed them (same count required)."""
    if set(reference) == set(candidate):
        return [(name, reference[name], candidate[name]) for name in reference]
    if len(reference) != len(candidate):
        raise ValueError(f"{len(candidate)} outputs, expected {len(reference)} ({', '.join(reference)})")
    return [(name, ref, cand) for (name, ref), cand in zip(reference.items(), candidate.values())]


def _output_error(name: str, ref: np.ndarray, cand: np.ndarray) -> OutputError:
    if ref.shape != cand.shape:
        raise ValueError(f"output {name!r} has shape {list(cand.shape)}, expected {list(ref.shape)}")
    if ref.size == 0:
        return OutputError(name, 0.0, 0.0, 0.0)
    if ref.dtype.kind in "biu":
        differ = float(np.mean(ref != cand.astype(ref.dtype, copy=False)))
        diff = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
        return OutputError(name, float(diff.max()), differ, differ)
    ref64 = ref.astype(np.float64)
    cand64 = cand.astype(np.float64)
    if not np.all(np.isfinite(cand64[np.isfinite(ref64)])):
        raise ValueError(f"output {name!r} has NaN or Inf where the reference is finite")
    finite = np.isfinite(ref64)
    diff = np.abs(ref64 - cand64)[finite]
    scale = float(np.mean(np.abs(ref64[finite]))) if finite.any() else 0.0
    drop = float(diff.mean() / scale) if scale > 0 else float(diff.mean())
    max_rel = float(np.max(diff / (np.abs(ref64[finite]) + 1e-6))) if diff.size else 0.0
    return OutputError(name, float(diff.max()) if diff.size else 0.0, max_rel, drop)


def compare(
    references: list[dict[str, np.ndarray]], candidates: list[dict[str, np.ndarray]], tolerance: float
) -> Comparison:
    """Compares every sample's outputs; the worst sample decides per output."""
    worst: dict[str, OutputError] = {}
    try:
        for reference, candidate in zip(references, candidates, strict=True):
            for name, ref, cand in _align(reference, candidate):
                error = _output_error(name, ref, cand)
                old = worst.get(name)
                worst[name] = error if old is None else OutputError(
                    name, max(old.max_abs, error.max_abs), max(old.max_rel, error.max_rel), max(old.drop, error.drop)
                )
    except ValueError as problem:
        return Comparison(False, float("inf"), tolerance, list(worst.values()), str(problem))
    outputs = list(worst.values())
    drop = max((o.drop for o in outputs), default=0.0)
    passed = drop <= tolerance
    problem = "" if passed else f"drop {drop:.3g} exceeds tolerance {tolerance:.3g}"
    return Comparison(passed, drop, tolerance, outputs, problem)


# (references, candidate outputs, tolerance) -> Comparison, one dict of outputs per sample: `compare` by default; the
# Python API passes Speedster's "accuracy" metric or the user's own.
Metric = Callable[[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]], float], Comparison]
