"""Speedster's `input_data` in every form it accepts, turned into named numpy samples (plus labels).

Accepted: a list of `((tensor, ...), label)` or `((tensor, ...),)`; a torch DataLoader yielding a tensor,
`(inputs..., label)` or `((inputs...), label)`; for HuggingFace a list of tokenizer dicts, or a list of strings with a
tokenizer; for ONNX the same tuples with numpy arrays. Every malformed sample is an InputDataError that says what
was expected, with the shapes of the first sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MAX_SAMPLES = 16  # the first samples are enough to calibrate and check; more only lengthens the run


class InputDataError(ValueError):
    """input_data does not have a form optimize_model accepts; the message says what was expected."""


@dataclasses.dataclass
class Samples:
    """Named inputs per sample (numpy), each sample's label (or None), and how the user passes inputs."""

    names: list[str]
    arrays: list[dict[str, np.ndarray]]
    labels: list[Any]
    framework: str  # "torch" (tensors in and out) or "numpy"
    as_keywords: bool  # the model takes the inputs as keyword arguments (HuggingFace dicts)

    def shapes(self, index: int = 0) -> dict[str, tuple[int, ...]]:
        return {name: tuple(array.shape) for name, array in self.arrays[index].items()}


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _describe(value: Any) -> str:
    if _is_tensor(value) or isinstance(value, np.ndarray):
        return f"{type(value).__name__} of shape {tuple(value.shape)} ({str(value.dtype).removeprefix('torch.')})"
    return type(value).__name__


def _to_numpy(value: Any) -> np.ndarray:
    if _is_tensor(value):
        from speedster_run.shared.torch_io import to_numpy

        return to_numpy(value)
    return np.asarray(value)


def _split(sample: Any, where: str, from_loader: bool) -> tuple[Any, Any]:
    """(inputs, label) of one sample. Inputs: a tensor/array, a tuple of them, or a mapping of them."""
    if _is_tensor(sample) or isinstance(sample, (np.ndarray, Mapping)):
        return sample, None
    if not isinstance(sample, (tuple, list)) or not sample:
        raise InputDataError(f"{where} is {_describe(sample)}; expected ((input, ...), label) or ((input, ...),) "
                             "with torch tensors (numpy arrays for an ONNX model)")
    first = sample[0]
    if isinstance(first, (tuple, list, Mapping)):  # ((inputs...), label) or ((inputs...),)
        if len(sample) > 2:
            raise InputDataError(f"{where} has {len(sample)} elements; expected ((input, ...), label) or "
                                 "((input, ...),): put the inputs in a tuple of their own")
        return first, (sample[1] if len(sample) == 2 else None)
    if from_loader and len(sample) >= 2:  # a DataLoader batch (inputs..., label)
        return tuple(sample[:-1]), sample[-1]
    return tuple(sample), None  # a bare tuple of inputs


def _collect(input_data: Any, tokenizer: Any, tokenizer_args: dict | None) -> tuple[list[tuple[Any, Any]], bool]:
    """[(inputs, label)] from any accepted container, and whether it came from a DataLoader."""
    loader = type(input_data).__name__ == "DataLoader" or (
        hasattr(input_data, "__iter__") and hasattr(input_data, "dataset") and hasattr(input_data, "batch_size"))
    if isinstance(input_data, (str, bytes, np.ndarray, Mapping)) or _is_tensor(input_data) or not (
            loader or isinstance(input_data, Sequence)):
        raise InputDataError(f"input_data is {_describe(input_data)}; expected a list of samples such as "
                             "[((tensor,), label), ...] or a torch DataLoader")
    items = []
    for index, sample in enumerate(input_data):
        if index == MAX_SAMPLES:
            break
        where = f"{'batch' if loader else 'input_data'}[{index}]"
        if isinstance(sample, str):
            if tokenizer is None:
                raise InputDataError(f"{where} is a string: pass tokenizer= (and tokenizer_args=) to tokenize it")
            args = {"return_tensors": "pt", **(tokenizer_args or {})}
            try:
                sample = dict(tokenizer(sample, **args))
            except Exception as error:
                raise InputDataError(f"{where}: the tokenizer failed ({error})") from None
        items.append(_split(sample, where, loader))
    if not items:
        raise InputDataError("input_data is empty: give at least one sample, e.g. [((tensor,), label)]")
    return items, loader


def normalize(input_data: Any, input_names: Sequence[str] = (), tokenizer: Any = None,
              tokenizer_args: dict | None = None) -> Samples:
    """Samples from input_data. `input_names` names positional inputs (the model's parameters), when known."""
    items, _ = _collect(input_data, tokenizer, tokenizer_args)
    first_inputs = items[0][0]
    as_keywords = isinstance(first_inputs, Mapping)
    if as_keywords:
        names = [str(key) for key in first_inputs]
    else:
        count = 1 if _is_tensor(first_inputs) or isinstance(first_inputs, np.ndarray) else len(first_inputs)
        names = list(input_names[:count]) + [f"input_{i}" for i in range(len(input_names), count)]
    arrays, labels, framework = [], [], None
    for index, (inputs, label) in enumerate(items):
        where = f"input_data[{index}]"
        if as_keywords != isinstance(inputs, Mapping):
            raise InputDataError(f"{where}: mixes dict and tuple samples; expected a dict with keys "
                                 f"{', '.join(names)} like input_data[0]")
        if as_keywords:
            if list(inputs) != names and set(inputs) != set(names):
                raise InputDataError(f"{where} has keys {', '.join(map(str, inputs))}; expected {', '.join(names)} "
                                     "like input_data[0]")
            values = [inputs[name] for name in names]
        else:
            values = [inputs] if _is_tensor(inputs) or isinstance(inputs, np.ndarray) else list(inputs)
        sample = {}
        for name, value in zip(names, values):
            kind = "torch" if _is_tensor(value) else "numpy" if isinstance(value, np.ndarray) else None
            if kind is None:
                expected = (f"a tensor of shape {tuple(arrays[0][name].shape)}" if arrays
                            else "a torch tensor (numpy array for an ONNX model)")
                raise InputDataError(f"{where}: input {name!r} is {_describe(value)}; expected {expected}")
            framework = framework or kind
            sample[name] = _to_numpy(value)
        if len(values) != len(names):
            raise InputDataError(f"{where} has {len(values)} inputs; expected {len(names)} "
                                 f"({', '.join(names)}) like input_data[0]")
        if arrays:
            _check_like_first(sample, arrays[0], where)
        arrays.append(sample)
        labels.append(label)
    return Samples(names, arrays, labels, framework or "numpy", as_keywords)


def _check_like_first(sample: dict[str, np.ndarray], first: dict[str, np.ndarray], where: str) -> None:
    """Same rank and dtype as the first sample: sizes may differ (dynamic axes), nothing else."""
    for name, array in sample.items():
        want = first[name]
        if array.ndim != want.ndim or array.dtype != want.dtype:
            raise InputDataError(f"{where}: input {name!r} is {array.dtype} of shape {tuple(array.shape)}; expected "
                                 f"{want.dtype} with {want.ndim} dims, like input_data[0]'s {tuple(want.shape)}")


def check_arity(samples: Samples, required: Sequence[str], accepted: Sequence[str] | None) -> None:
    """The samples fit the model's parameters: at least the required ones, at most the accepted ones (None: any)."""
    count = len(samples.names)
    if samples.as_keywords:
        unknown = [n for n in samples.names if accepted is not None and n not in accepted]
        missing = [n for n in required if n not in samples.names]
        if unknown or missing:
            raise InputDataError(f"input_data's dicts have keys {', '.join(samples.names)}; the model "
                                 + (f"takes no {', '.join(unknown)}" if unknown else f"also needs {', '.join(missing)}"))
        return
    if count < len(required) or (accepted is not None and count > len(accepted)):
        shapes = ", ".join(f"{n}={tuple(a.shape)}" for n, a in samples.arrays[0].items())
        raise InputDataError(f"input_data's samples have {count} input(s) ({shapes}); the model's forward takes "
                             f"{', '.join(accepted or required)}: give ((" + ", ".join(required) + ",), label) per "
                             "sample")
