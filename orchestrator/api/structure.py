"""The shape of a model's output (a tensor, tuples, lists, dicts, HuggingFace ModelOutputs) as plain JSON, so that
the optimized model returns the same structure as the original from the flat list of outputs a backend gives."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

# Only these modules may name an output class in a saved manifest: loading never imports arbitrary code.
OUTPUT_CLASS_MODULES = ("transformers.",)


def flatten(value: Any) -> tuple[list[Any], dict]:
    """(leaves in order, structure); None fields of a ModelOutput are left out, as ModelOutput itself does."""
    leaves: list[Any] = []

    def walk(node: Any) -> dict:
        if hasattr(node, "shape") and hasattr(node, "dtype"):
            leaves.append(node)
            return {"leaf": len(leaves) - 1}
        if isinstance(node, Mapping):
            kind = type(node)
            entry = {"keys": [str(k) for k in node], "items": [walk(v) for v in node.values()]}
            if kind.__module__.startswith(OUTPUT_CLASS_MODULES):
                entry["class"] = f"{kind.__module__}:{kind.__qualname__}"
            return entry
        if isinstance(node, (tuple, list)):
            return {"sequence": "list" if isinstance(node, list) else "tuple", "items": [walk(v) for v in node]}
        raise TypeError(f"the model returns a {type(node).__name__}; outputs must be tensors, or tuples, lists and "
                        "dicts of tensors")

    return leaves, walk(value)


def _output_class(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not module.startswith(OUTPUT_CLASS_MODULES):
        raise ValueError(f"output class {name} is not from an allowed library ({', '.join(OUTPUT_CLASS_MODULES)})")
    return getattr(importlib.import_module(module), qualname)


def unflatten(structure: dict, leaves: list[Any]) -> Any:
    """The original structure around the backend's outputs (leaves in flatten's order)."""
    if "leaf" in structure:
        return leaves[structure["leaf"]]
    if "keys" in structure:
        values = {k: unflatten(s, leaves) for k, s in zip(structure["keys"], structure["items"])}
        return _output_class(structure["class"])(**values) if "class" in structure else values
    items = [unflatten(s, leaves) for s in structure["items"]]
    return items if structure["sequence"] == "list" else tuple(items)
