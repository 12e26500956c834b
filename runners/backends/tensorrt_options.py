"""TensorRT options and optimisation profiles: what a LoadSpec's options ask for, and the (min, opt, max) shapes an
engine is built for. Pure functions, tested without TensorRT; shared by the ONNX and the Torch-TensorRT compilers.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from typing import Any

import numpy as np

from runners.backends.base import ARTIFACT_OPTION, TensorInfo
from speedster_run.shared.errors import CandidateError

CALIBRATION_METHODS = ("entropy", "minmax", "percentile")

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TrtOptions:
    """The LoadSpec options this backend reads; unknown keys are ignored, as in the other backends."""

    profile: dict[str, tuple[Shape, Shape, Shape]] | None = None  # input name -> (min, opt, max)
    workspace_bytes: int = 0  # 0: TensorRT's default (the device's memory)
    cache_dir: str = ""  # where the timing cache lives; "" -> <workdir>/tensorrt-cache
    calibration_method: str = "entropy"  # how Q/DQ scales are chosen when int8 inserts them
    builder_optimization_level: int | None = None  # 0..5; TensorRT's default is 3
    artifact: bool = False  # the model file is an engine this backend saved


def parse_options(options: dict[str, str]) -> TrtOptions:
    """TrtOptions from LoadSpec.options; a malformed value fails the candidate as "compile"."""
    parsed: dict[str, Any] = {"artifact": options.get(ARTIFACT_OPTION) == "true",
                              "cache_dir": options.get("cache_dir", "")}
    if "profile" in options:
        parsed["profile"] = _parse_profile(options["profile"])
    if "workspace_mb" in options:
        parsed["workspace_bytes"] = _positive_int(options["workspace_mb"], "workspace_mb") << 20
    method = options.get("calibration_method", "entropy")
    if method not in CALIBRATION_METHODS:
        raise CandidateError("compile", f"calibration_method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    parsed["calibration_method"] = method
    if "builder_optimization_level" in options:
        level = _positive_int(options["builder_optimization_level"], "builder_optimization_level", minimum=0)
        if level > 5:
            raise CandidateError("compile", f"builder_optimization_level {level} is not in 0..5")
        parsed["builder_optimization_level"] = level
    return TrtOptions(**parsed)


def _positive_int(text: str, key: str, minimum: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise CandidateError("compile", f"{key} must be an integer >= {minimum}, got {text!r}")
    return value


def _parse_profile(text: str) -> dict[str, tuple[Shape, Shape, Shape]]:
    """'{"x": [[1,3,224,224], [8,3,224,224], [32,3,224,224]]}' -> {"x": (min, opt, max)}."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise CandidateError("compile", f"option profile is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise CandidateError("compile", 'option profile must map input names to [min, opt, max] shapes')
    profile = {}
    for name, shapes in raw.items():
        if not (isinstance(shapes, list) and len(shapes) == 3 and all(
                isinstance(s, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in s)
                for s in shapes)):
            raise CandidateError("compile", f"profile of {name!r} must be [min, opt, max], three lists of positive "
                                            f"integers, got {shapes!r}")
        profile[name] = tuple(tuple(s) for s in shapes)
    return profile


def build_profiles(inputs: list[TensorInfo], options: TrtOptions,
                   calibration: list[dict[str, np.ndarray]]) -> dict[str, tuple[Shape, Shape, Shape]]:
    """(min, opt, max) shapes for every input with a symbolic dim, which a TensorRT engine needs.

    From the "profile" option where it names the input, else from the calibration samples (min and max per dim, opt
    the most frequent shape). Static inputs need no profile. Every shape is checked against the model's rank and
    static dims, and min <= opt <= max, so that a bad profile fails here with its input's name.
    """
    given = options.profile or {}
    unknown = sorted(set(given) - {i.name for i in inputs})
    if unknown:
        raise CandidateError("compile", f"profile names inputs the model lacks: {', '.join(unknown)} "
                                        f"(inputs: {', '.join(i.name for i in inputs)})")
    profiles = {}
    for info in inputs:
        if info.name in given:
            shapes = given[info.name]
        elif None not in info.shape:
            continue
        else:
            shapes = _profile_from_samples(info, calibration)
        _check_profile(info, shapes)
        profiles[info.name] = shapes
    return profiles


def _profile_from_samples(info: TensorInfo, calibration: list[dict[str, np.ndarray]]) -> tuple[Shape, Shape, Shape]:
    shapes = [tuple(int(d) for d in np.shape(sample[info.name])) for sample in calibration if info.name in sample]
    if not shapes:
        dims = ", ".join(n or "?" for n, d in zip(info.dim_names or ("",) * len(info.shape), info.shape) if d is None)
        raise CandidateError("compile", f"input {info.name!r} has symbolic dims ({dims}) and no sample gives its "
                                        f"shape: pass option profile={{\"{info.name}\": [min, opt, max]}}")
    if len({len(s) for s in shapes}) != 1:
        raise CandidateError("compile", f"the samples of input {info.name!r} differ in rank: {sorted(set(shapes))}")
    low = tuple(min(dims) for dims in zip(*shapes))
    high = tuple(max(dims) for dims in zip(*shapes))
    opt = collections.Counter(shapes).most_common(1)[0][0]
    return low, opt, high


def _check_profile(info: TensorInfo, shapes: tuple[Shape, Shape, Shape]) -> None:
    low, opt, high = shapes
    for label, shape in zip(("min", "opt", "max"), shapes):
        if len(shape) != len(info.shape):
            raise CandidateError("compile", f"profile {label} shape {list(shape)} of input {info.name!r} has rank "
                                            f"{len(shape)}, the model's has {len(info.shape)}")
        fixed = [(i, d, s) for i, (d, s) in enumerate(zip(info.shape, shape)) if d is not None and d != s]
        if fixed:
            axis, want, got = fixed[0]
            raise CandidateError("compile", f"profile {label} shape of input {info.name!r} has {got} at axis {axis}, "
                                            f"where the model fixes {want}")
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise CandidateError("compile", f"profile of input {info.name!r} needs min <= opt <= max per dim, got "
                                        f"{list(low)}, {list(opt)}, {list(high)}")
