"""Speedster's `dynamic_info`: which input axes vary, with min / opt / max sizes.

    dynamic_info = {
        "inputs": [{0: {"name": "batch", "min_val": 1, "opt_val": 1, "max_val": 8},
                    1: {"name": "num_tokens", "min_val": 1, "opt_val": 8, "max_val": 128}}, ...],
        "outputs": [{0: "batch", 1: "num_tokens"}, ...],
    }

Inputs are listed in the model's input order (or keyed by input name). An axis given as a bare name (`{0: "batch"}`)
takes its range from the samples. Axes that share a name share one size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from orchestrator.api.input_data import InputDataError, Samples


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str
    min: int
    opt: int
    max: int


# input name -> axis index -> Axis
DynamicAxes = dict[str, dict[int, Axis]]


def parse(dynamic_info: Any, samples: Samples) -> DynamicAxes:
    """DynamicAxes from the user's dynamic_info, checked against the samples; {} for None."""
    if dynamic_info is None:
        return {}
    if not isinstance(dynamic_info, Mapping) or "inputs" not in dynamic_info:
        raise InputDataError('dynamic_info must be a dict with an "inputs" list, e.g. {"inputs": [{0: {"name": '
                             '"batch", "min_val": 1, "opt_val": 1, "max_val": 8}}], "outputs": [{0: "batch"}]}')
    given = dynamic_info["inputs"]
    if isinstance(given, Mapping):
        unknown = sorted(set(given) - set(samples.names))
        if unknown:
            raise InputDataError(f"dynamic_info names inputs {', '.join(map(str, unknown))}; the model's inputs are "
                                 f"{', '.join(samples.names)}")
        per_input = [given.get(name) or {} for name in samples.names]
    else:
        if len(given) > len(samples.names):
            raise InputDataError(f"dynamic_info lists {len(given)} inputs; the model has {len(samples.names)} "
                                 f"({', '.join(samples.names)})")
        per_input = list(given) + [{}] * (len(samples.names) - len(given))
    first = samples.shapes()
    axes: DynamicAxes = {}
    for name, spec in zip(samples.names, per_input):
        for axis, value in (spec or {}).items():
            rank = len(first[name])
            if not isinstance(axis, int) or not 0 <= axis < rank:
                raise InputDataError(f"dynamic_info: input {name!r} has {rank} axes (shape {first[name]}); "
                                     f"axis {axis!r} does not exist")
            axes.setdefault(name, {})[axis] = _axis(name, axis, value, samples)
    return axes


def _axis(name: str, axis: int, value: Any, samples: Samples) -> Axis:
    seen = [s[name].shape[axis] for s in samples.arrays]
    if isinstance(value, str):
        return Axis(value, min(seen), seen[0], max(seen))
    if not isinstance(value, Mapping) or "name" not in value:
        raise InputDataError(f"dynamic_info: input {name!r} axis {axis}: expected a name or "
                             '{"name": ..., "min_val": ..., "opt_val": ..., "max_val": ...}')
    low = int(value.get("min_val", min(seen)))
    high = int(value.get("max_val", max(seen)))
    opt = int(value.get("opt_val", seen[0]))
    if not 1 <= low <= opt <= high:
        raise InputDataError(f"dynamic_info: input {name!r} axis {axis}: need 1 <= min_val <= opt_val <= max_val, "
                             f"got {low}, {opt}, {high}")
    outside = [size for size in seen if not low <= size <= high]
    if outside:
        raise InputDataError(f"dynamic_info: input {name!r} axis {axis} ranges {low}..{high}, but input_data has "
                             f"size {outside[0]} there")
    return Axis(str(value["name"]), low, opt, high)


def infer(samples: Samples) -> DynamicAxes:
    """Without dynamic_info: the axes whose size varies across the samples become dynamic over the seen range.
    Axes that vary together (same sizes in every sample) share a name."""
    names: dict[tuple[int, ...], str] = {}
    axes: DynamicAxes = {}
    for name in samples.names:
        for axis in range(samples.arrays[0][name].ndim):
            seen = tuple(s[name].shape[axis] for s in samples.arrays)
            if len(set(seen)) > 1:
                label = names.setdefault(seen, "batch" if axis == 0 and not names else f"dim_{len(names)}")
                axes.setdefault(name, {})[axis] = Axis(label, min(seen), seen[0], max(seen))
    return axes


def check_consistent(axes: DynamicAxes, samples: Samples) -> None:
    """Every static axis has one size in all samples; axes sharing a name have equal sizes in each sample."""
    for index, sample in enumerate(samples.arrays):
        sizes: dict[str, int] = {}
        for name, array in sample.items():
            for axis, size in enumerate(array.shape):
                dynamic = axes.get(name, {}).get(axis)
                if dynamic is None and size != samples.arrays[0][name].shape[axis]:
                    raise InputDataError(
                        f"input_data[{index}]: input {name!r} has shape {tuple(array.shape)}, but input_data[0] has "
                        f"{samples.arrays[0][name].shape}; declare axis {axis} in dynamic_info to let it vary")
                if dynamic is not None and sizes.setdefault(dynamic.name, size) != size:
                    raise InputDataError(f"input_data[{index}]: axes named {dynamic.name!r} have different sizes")


def resized(sample: dict[str, np.ndarray], axes: DynamicAxes, pick: str) -> dict[str, np.ndarray]:
    """The sample with every dynamic axis at its min or max size: the data repeated (or cut) along the axis, so
    token ids and masks stay valid values."""
    result = {}
    for name, array in sample.items():
        for axis, spec in axes.get(name, {}).items():
            size = getattr(spec, pick)
            array = np.take(array, np.arange(size) % array.shape[axis], axis=axis)
        result[name] = array
    return result


def to_json(axes: DynamicAxes) -> dict:
    return {name: {str(axis): dataclasses.asdict(spec) for axis, spec in per.items()} for name, per in axes.items()}


def from_json(data: dict) -> DynamicAxes:
    return {name: {int(axis): Axis(**spec) for axis, spec in per.items()} for name, per in data.items()}
