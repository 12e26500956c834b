"""speedster.json of a saved directory (how the original is called), read as plain data and checked field by field:
a malformed file is a SavedModelError with one line, before anything is loaded (never a KeyError at the first call).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.loader import SavedModelError, saved_file, saved_json

API_FILE = "speedster.json"
API_VERSION = 1


def read_meta(directory: Path) -> dict:
    path = saved_file(directory, API_FILE)
    meta = saved_json(directory, API_FILE, "model saved by save_model")
    if meta.get("api_version") != API_VERSION:
        raise SavedModelError(f"{directory}: saved with format {meta.get('api_version')}, this version reads "
                              f"{API_VERSION}")
    try:
        _check(meta)
    except (TypeError, ValueError, KeyError, ImportError, AttributeError) as error:
        raise SavedModelError(f"{path}: {error}") from None
    return meta


def _check(meta: dict) -> None:
    from orchestrator.api import dynamic

    for key, kind in (("input_names", list), ("input_dtypes", dict), ("input_shapes", dict), ("dynamic_axes", dict),
                      ("output_structure", dict), ("framework", str), ("device", str)):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{key!r} is missing or not a {kind.__name__}")
    names = meta["input_names"]
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError("'input_names' must be distinct strings")
    for name in names:
        shape = meta["input_shapes"].get(name)
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise ValueError(f"'input_shapes' has no list of sizes for input {name!r}")
        np.dtype(_string(meta["input_dtypes"].get(name), f"'input_dtypes' for input {name!r}"))
    for name, axes in dynamic.from_json(meta["dynamic_axes"]).items():
        if name not in names or any(not 0 <= axis < len(meta["input_shapes"][name]) for axis in axes):
            raise ValueError(f"'dynamic_axes' names an axis that input {name!r} does not have")
        if not all(isinstance(a.name, str) and all(isinstance(v, int) for v in (a.min, a.opt, a.max))
                   for a in axes.values()):
            raise ValueError(f"'dynamic_axes' of input {name!r} are not named integer ranges")
    if meta["framework"] == "torch":
        import torch

        torch.device(_string(meta.get("torch_device"), "'torch_device'"))
    _check_structure(meta["output_structure"])


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is missing or not a string")
    return value


def _check_structure(node: Any) -> None:
    """Output structure as structure.flatten writes it; a class must be a ModelOutput (structure.unflatten calls it)."""
    from orchestrator.api import structure

    if not isinstance(node, dict):
        raise ValueError("'output_structure' holds a non-object")
    if "leaf" in node:
        if not isinstance(node["leaf"], int) or isinstance(node["leaf"], bool) or node["leaf"] < 0:
            raise ValueError("'output_structure' has a leaf that is not an index")
        return
    items = node.get("items")
    if not isinstance(items, list):
        raise ValueError("'output_structure' has a node without 'items'")
    if "keys" in node:
        if not isinstance(node["keys"], list) or len(node["keys"]) != len(items) or not all(
                isinstance(k, str) for k in node["keys"]):
            raise ValueError("'output_structure' has keys that do not match its items")
        if "class" in node:
            from transformers.utils import ModelOutput

            kind = structure._output_class(_string(node["class"], "an output class"))
            if not (isinstance(kind, type) and issubclass(kind, ModelOutput)):
                raise ValueError(f"output class {node['class']} is not a transformers ModelOutput")
    elif node.get("sequence") not in ("list", "tuple"):
        raise ValueError("'output_structure' has a sequence that is neither a list nor a tuple")
    for item in items:
        _check_structure(item)
