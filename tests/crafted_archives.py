"""torch.export archives crafted to run code when opened: a real torch.export.save of a small model, then one part of
it rewritten so that torch.export.load (or what it builds) would run a command that creates a marker file.

Each `craft_*` writes `target` from `source` (an archive torch.export.save wrote) and returns it; the command is
`touch MARKER`, so a test asserts that the marker never appears.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import torch


class SmallModel(torch.nn.Module):
    """x [batch, 4] -> [batch, 3]; a Linear plus a constant, so that the archive has weights, constants and inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x) + torch.tensor([1.0, 2.0, 3.0])


def save_small_model(path: Path) -> Path:
    torch.manual_seed(0)
    program = torch.export.export(SmallModel().eval(), (torch.randn(2, 4),))
    torch.export.save(program, str(path))
    return path


class _System:
    """Unpickling calls os.system(command): what a malicious payload does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Evaluate:
    """Unpickling evaluates `expression`: runs the command and still yields a usable value, so that a run that opens
    the archive (in a container, with --trust-model) goes on."""

    def __init__(self, expression: str):
        self.expression = expression

    def __reduce__(self):
        return eval, (self.expression,)


def _pickled(value) -> bytes:
    return pickle.dumps(value, protocol=2)  # torch.save's protocol: torch's weights-only unpickler reads it


def touch(marker: Path) -> str:
    return f"touch {marker}"


def _rewrite(source: Path, target: Path, change: Callable[[str, bytes], bytes | None],
             extra: dict[str, bytes] | None = None) -> Path:
    """Copies the archive member by member through change(inner name, data) (None: unchanged), adding `extra`."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as crafted:
        top = original.namelist()[0].partition("/")[0]
        for info in original.infolist():
            data = original.read(info)
            replaced = change(info.filename.partition("/")[2], data)
            crafted.writestr(info, data if replaced is None else replaced)
        for inner, data in (extra or {}).items():
            crafted.writestr(f"{top}/{inner}", data)
    return target


def _json_member(name: str, edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes | None]:
    def change(inner: str, data: bytes) -> bytes | None:
        if inner != name:
            return None
        document = json.loads(data)
        edit(document)
        return json.dumps(document).encode()

    return change


def craft_pickled_weight(source: Path, target: Path, marker: Path) -> Path:
    """The bias declared a pickled tensor (torch.load(weights_only=False)), its payload an os.system call."""
    def edit(config: dict) -> None:
        config["config"]["linear.bias"]["use_pickle"] = True

    path_name = "data/weights/weight_1"
    config = _json_member("data/weights/model_weights_config.json", edit)
    return _rewrite(source, target, lambda inner, data: _pickled(_System(touch(marker))) if inner == path_name
                    else config(inner, data))


def craft_opaque_object(source: Path, target: Path, marker: Path) -> Path:
    """An extra constant stored as an opaque object (pickle.loads)."""
    def edit(config: dict) -> None:
        config["config"]["opaque"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                      "tensor_meta": None}

    return _rewrite(source, target, _json_member("data/constants/model_constants_config.json", edit),
                    {"data/constants/opaque_obj_0": _pickled(_System(touch(marker)))})


def craft_example_inputs(source: Path, target: Path, marker: Path, usable: bool = False) -> Path:
    """The example inputs (torch.load: weights_only=True, then a fallback to weights_only=False) replaced by an
    os.system call; `usable`: one that also returns example inputs, so that the program still loads."""
    if usable:
        buffer = io.BytesIO()
        torch.save(_Evaluate(f"(__import__('os').system({touch(marker)!r}), "
                             "((__import__('torch').zeros(2, 4),), {}))[1]"), buffer)
        payload = buffer.getvalue()
    else:
        payload = _pickled(_System(touch(marker)))
    return _rewrite(source, target, lambda inner, data: payload if inner == "data/sample_inputs/model.pt" else None)


def craft_shape_expression(source: Path, target: Path, marker: Path) -> Path:
    """A symbolic size whose expression (sympy.sympify: eval) is an os.system call."""
    def edit(program: dict) -> None:
        values = program["graph_module"]["graph"]["tensor_values"]
        values["x"]["sizes"][0] = {"as_expr": {"expr_str": f"__import__('os').system({touch(marker)!r})",
                                               "hint": {"as_int": 2}}}

    return _rewrite(source, target, _json_member("models/model.json", edit))


def craft_graph_call(source: Path, target: Path, marker: Path) -> Path:
    """A graph node that calls torch.os.system (resolved by name from the JSON) instead of an operator."""
    def edit(program: dict) -> None:
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": touch(marker)}, "kind": 1}]

    return _rewrite(source, target, _json_member("models/model.json", edit))


def craft_file_read(source: Path, target: Path, marker: Path) -> Path:
    """A graph node that calls aten::from_file (a torch operator, which maps a file of the host into a tensor)."""
    def edit(program: dict) -> None:
        node = program["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.ops.aten.from_file.default"
        node["inputs"] = [{"name": "filename", "arg": {"as_string": "/etc/hostname"}, "kind": 1},
                          {"name": "shared", "arg": {"as_bool": False}, "kind": 1},
                          {"name": "size", "arg": {"as_int": 12}, "kind": 1}]

    return _rewrite(source, target, _json_member("models/model.json", edit))


def craft_guard_code(source: Path, target: Path, marker: Path) -> Path:
    """Guard code (compiled with exec by ep.module(), run at each call) that calls os.system."""
    def edit(program: dict) -> None:
        program["guards_code"] = [f"__import__('os').system({touch(marker)!r}) == 0"]

    return _rewrite(source, target, _json_member("models/model.json", edit))


def craft_aoti(source: Path, target: Path, marker: Path) -> Path:
    """An AOTInductor package entry (a shared library torch would dlopen)."""
    return _rewrite(source, target, lambda inner, data: None,
                    {"data/aotinductor/model/model.so": b"\x7fELF not really"})


def craft_legacy(source: Path, target: Path, marker: Path) -> Path:
    """The format of torch < 2.6 (members at the root), its example inputs an os.system call."""
    from torch._export.serde.serialize import SCHEMA_VERSION, serialize

    artifact = serialize(torch.export.load(str(source)))
    with zipfile.ZipFile(target, "w") as crafted:
        crafted.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        crafted.writestr("serialized_exported_program.json", artifact.exported_program)
        crafted.writestr("serialized_state_dict.pt", artifact.state_dict)
        crafted.writestr("serialized_constants.pt", artifact.constants)
        crafted.writestr("serialized_example_inputs.pt", _pickled(_System(touch(marker))))
    return target


CRAFTED = {
    "pickled weight": (craft_pickled_weight, "payload data/weights/weight_1 needs the global posix.system"),
    "opaque object": (craft_opaque_object, "data/constants/opaque_obj_0 is an opaque Python object"),
    "example inputs": (craft_example_inputs, "payload data/sample_inputs/model.pt needs the global posix.system"),
    "shape expression": (craft_shape_expression, "symbolic shape expression that calls something other"),
    "graph call": (craft_graph_call, "is not an allowed operator type"),  # torch's verifier, then ours
    "file read": (craft_file_read, "calls aten::from_file, which maps a file of the host into a tensor"),
    "guard code": (craft_guard_code, None),  # loads: never compiled (check_guards=False)
    "aotinductor": (craft_aoti, "AOTInductor compiled code"),
    "legacy format": (craft_legacy, "payload serialized_example_inputs.pt needs the global posix.system"),
}
