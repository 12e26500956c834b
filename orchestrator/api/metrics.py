"""Speedster's `metric`: how far a candidate's outputs may drift from the original's.

- "numeric_precision" (default): the relative difference of the outputs, mean |optimized - original| / mean
  |original|, worst output and sample;
- "accuracy": the drop in accuracy against the labels (argmax of the first output), original minus optimized;
- a callable `(original_outputs, optimized_outputs, labels) -> drop`: lists with one entry per sample, each output
  in the structure the model returns (torch tensors for a torch model), and the samples' labels.
A candidate passes when its drop is at most metric_drop_ths (without one: the precision's default tolerance).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from orchestrator.api import structure
from orchestrator.compare import Comparison, Metric, compare

METRICS = ("numeric_precision", "accuracy")


def _accuracy(outputs: list[dict[str, np.ndarray]], labels: list[Any]) -> float:
    hits = []
    for sample, label in zip(outputs, labels):
        if label is None:
            continue
        predicted = np.argmax(next(iter(sample.values())), axis=-1).reshape(-1)
        wanted = np.asarray(label.detach().cpu().numpy() if hasattr(label, "detach") else label).reshape(-1)
        if predicted.shape != wanted.shape:
            raise ValueError(f"a label has {wanted.size} value(s) where the model predicts {predicted.size}")
        hits.extend(predicted == wanted)
    return float(np.mean(hits))


def _judged(numeric: Comparison, drop: float, tolerance: float, name: str) -> Comparison:
    """The numeric comparison (kept for the per-output errors) with the metric's drop deciding."""
    if numeric.problem and math.isinf(numeric.drop):  # wrong shapes, NaN: no metric can pass that
        return numeric
    passed = drop <= tolerance
    problem = "" if passed else f"{name} drop {drop:.3g} exceeds tolerance {tolerance:.3g}"
    return dataclasses.replace(numeric, passed=passed, drop=drop, tolerance=tolerance, problem=problem)


def make_metric(metric: str | Callable | None, labels: list[Any], output_structure: dict, framework: str) -> Metric:
    """The orchestrator's Metric for Speedster's `metric` argument; ValueError for an unknown one."""
    if metric is None or metric == "numeric_precision":
        return compare
    if metric == "accuracy":
        if all(label is None for label in labels):
            raise ValueError('metric="accuracy" needs labels: give input_data as [((inputs...), label), ...]')

        def accuracy(references, outputs, tolerance):
            numeric = compare(references, outputs, math.inf)
            try:
                drop = _accuracy(references, labels) - _accuracy(outputs, labels)
            except ValueError as error:
                return dataclasses.replace(numeric, passed=False, drop=math.inf, problem=f"accuracy: {error}")
            return _judged(numeric, drop, tolerance, "accuracy")

        return accuracy
    if callable(metric):
        def custom(references, outputs, tolerance):
            numeric = compare(references, outputs, math.inf)
            try:
                drop = float(metric(_structured(references, output_structure, framework),
                                    _structured(outputs, output_structure, framework), labels[:len(outputs)]))
            except Exception as error:
                return dataclasses.replace(numeric, passed=False, drop=math.inf,
                                           problem=f"the metric function failed: {type(error).__name__}: {error}")
            return _judged(numeric, drop, tolerance, getattr(metric, "__name__", "metric"))

        return custom
    raise ValueError(f"metric={metric!r}: use {' or '.join(map(repr, METRICS))}, or a function "
                     "(original_outputs, optimized_outputs, labels) -> drop")


def _structured(samples: list[dict[str, np.ndarray]], output_structure: dict, framework: str) -> list[Any]:
    if framework == "torch":
        import torch

        return [structure.unflatten(output_structure, [torch.from_numpy(np.array(v)) for v in s.values()])
                for s in samples]
    return [structure.unflatten(output_structure, list(s.values())) for s in samples]
