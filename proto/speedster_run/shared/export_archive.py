"""Opening a torch archive that nobody vouched for (a torch.export .pt2, a TorchScript file) without running code
from it on this machine.

torch.export.load is not meant for untrusted files. Besides the graph (JSON) and raw tensor bytes, an archive can
make it run code four ways, and this module closes each before, or right after, torch reads the archive:
- pickled payloads (tensor-subclass weights and constants, the example inputs, the legacy format's .pt files):
  torch.load(..., weights_only=False) or pickle.loads. Each must load through torch's weights-only unpickler;
  TorchBind script objects and opaque Python objects (constants/custom_obj_*, constants/opaque_obj_*), which cannot,
  are refused, as are AOTInductor packages (data/aotinductor/: shared libraries that torch would dlopen).
- symbolic shape expressions (`expr_str`): parsed with sympy.sympify, which calls eval. Each must be a plain sympy
  expression: calls of sympy's and torch's shape functions, symbols, numbers (checked on its syntax tree).
- guard code: ep.module() compiles a guard function with exec, from the archive's `guards_code` and from input
  names and keys pasted into Python source. A program loaded here builds its module with check_guards=False
  (inputs are still checked against the program's shape ranges, by a hook), so no such source is ever compiled.
- graph nodes: a call_function node may name any callable reachable from `torch`, `math` or `_operator`
  (torch.os.system...). Once loaded, every call must be a torch operator or one of the builtins torch's own
  verifier admits; aten::from_file (which maps a host file into a tensor) is refused.
The members themselves are an allow-list: a member this module does not know is refused rather than guessed about.

A TorchScript archive holds no Python: torch.jit.load unpickles data.pkl with TorchScript's own unpickler (tensors,
TorchScript types and the archive's TorchScript classes; no Python class or function) and compiles code/ with the
TorchScript compiler, whose programs call torch operators only, also at load (__setstate__). The one operator that
reaches the host's files, aten::from_file, is refused in code/ (TorchScript cannot name an operator indirectly).
"""

from __future__ import annotations

import ast
import functools
import io
import json
import re
import zipfile
from typing import IO, Any

# torch's archive layout (torch/_C/_export/pt2_archive_constants), relative to the archive's top folder.
_PLAIN = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|extra/.+")
_MODEL = re.compile(r"models/[^/]+\.json")
_CONFIG = re.compile(r"data/(weights|constants)/[^/]+_(weights|constants)_config\.json")
_PAYLOAD = re.compile(r"data/(weights|constants|sample_inputs)/[^/]+")
_REFUSED = {
    "data/constants/custom_obj_": "a TorchBind script object (loaded by TorchScript's unpickler, not weights-only)",
    "data/constants/opaque_obj_": "an opaque Python object (loaded with pickle.loads)",
    "data/aotinductor/": "AOTInductor compiled code (a shared library torch would load)",
    "data/executorch/": "an ExecuTorch program",
}
# The format of torch < 2.6: members at the archive's root.
_LEGACY_PLAIN = re.compile(r"version|extra_files/.+")
_LEGACY_MODEL = "serialized_exported_program.json"
_LEGACY_PICKLES = {"serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt",
                   "serialized_state_dict.json", "serialized_constants.json"}

# Names a symbolic expression may use: sympy's constructors as srepr writes them, and the shape functions torch's
# deserializer passes to sympify (torch/_export/serde/serialize.py). sympify resolves any other name in sympy's
# namespace (S, sympify, var...) or Python's builtins (eval, __import__...): none is admitted.
_SYMPY_NAMES = frozenset("""
    Symbol Dummy Integer Rational Float Add Mul Pow Mod Max Min Abs floor ceiling sign Piecewise ExprCondPair Tuple
    Eq Ne Lt Le Gt Ge Equality Unequality StrictLessThan StrictGreaterThan LessThan GreaterThan And Or Not Xor
    BooleanTrue BooleanFalse true false oo zoo nan Infinity NegativeInfinity NaN Half One Zero NegativeOne
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural
    FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt
    RoundDecimal ToFloat Identity
""".split())
_SYMBOL = re.compile(r"[a-z]+[0-9]+")  # torch's shape symbols: s0, u3, zuf0, ps1 (older archives print them bare)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[-+]?[0-9.]+(e[-+]?[0-9]+)?")  # a string literal: a name or a number
_EXPRESSION_NODES = (ast.Expression, ast.Call, ast.Name, ast.Load, ast.Constant, ast.keyword, ast.Tuple, ast.UnaryOp,
                     ast.USub, ast.UAdd, ast.Not, ast.Invert, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div,
                     ast.FloorDiv, ast.Mod, ast.Pow, ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
                     ast.BoolOp, ast.And, ast.Or)
_MAX_EXPRESSION_CHARS = 10_000

TRUST_HINT = "if you trust the file, --trust-model opens it inside the torch runner's container instead"


class UntrustedArchiveError(ValueError):
    """The archive holds something that would run code (or is not known to be safe) when torch opens it."""


def check_archive(file: IO[bytes], name: str) -> None:
    """Refuses an archive that could make torch.export.load or ep.module() run code; `file` is left at 0."""
    try:
        with zipfile.ZipFile(file) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if _LEGACY_MODEL in members:
                _check_legacy(archive, members, name)
            else:
                _check_current(archive, members, name)
    except zipfile.BadZipFile:
        pass  # torch's reader fails on it too, saying so
    finally:
        file.seek(0)


def _check_current(archive: zipfile.ZipFile, members: list[str], name: str) -> None:
    # torch reads every record under the first member's top folder (PyTorchFileReader's archive name).
    top = members[0].partition("/")[0] + "/" if members else ""
    relative = {}
    for member in members:
        if not member.startswith(top):
            raise UntrustedArchiveError(f"{name}: member {member} lies outside the archive's folder {top}; "
                                        f"{TRUST_HINT}")
        relative[member[len(top):]] = member
    raw = set()  # payloads that torch reads as raw tensor bytes, as their configs declare
    for inner in sorted(relative):
        if _CONFIG.fullmatch(inner):
            raw |= _raw_payloads(inner, _json(archive, relative[inner], name), name)
    for inner, member in sorted(relative.items()):
        refused = next((why for prefix, why in _REFUSED.items() if inner.startswith(prefix)), None)
        if refused:
            raise UntrustedArchiveError(f"{name}: {inner} is {refused}; {TRUST_HINT}")
        if _MODEL.fullmatch(inner):
            _check_program_json(_json(archive, member, name), name, inner)
        elif _CONFIG.fullmatch(inner) or inner in raw or _PLAIN.fullmatch(inner):
            continue
        elif _PAYLOAD.fullmatch(inner):  # pickled weights or constants, the example inputs, the legacy .pt files
            _check_pickle(archive.read(member), name, inner)
        else:
            raise UntrustedArchiveError(f"{name}: unexpected member {inner} (not part of torch.export's format as "
                                        f"this check knows it); {TRUST_HINT}")


def _check_legacy(archive: zipfile.ZipFile, members: list[str], name: str) -> None:
    for member in members:
        if member == _LEGACY_MODEL:
            _check_program_json(_json(archive, member, name), name, member)
        elif member in _LEGACY_PICKLES:  # torch tries weights_only=True first, then falls back to a full unpickle
            _check_pickle(archive.read(member), name, member)
        elif not _LEGACY_PLAIN.fullmatch(member):
            raise UntrustedArchiveError(f"{name}: unexpected member {member} in a torch.export archive of the legacy "
                                        f"format; {TRUST_HINT}")


def _json(archive: zipfile.ZipFile, member: str, name: str) -> Any:
    try:
        return json.loads(archive.read(member))
    except ValueError as error:
        raise UntrustedArchiveError(f"{name}: {member} is not JSON ({error})") from None


def _raw_payloads(inner: str, config: Any, name: str) -> set[str]:
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
        raise UntrustedArchiveError(f"{name}: {inner} is not a payload config")
    folder = inner.rsplit("/", 1)[0]
    return {f"{folder}/{e.get('path_name')}" for e in entries.values() if e.get("use_pickle") is False}


def _check_pickle(data: bytes, name: str, inner: str) -> None:
    """The payload must load with torch's weights-only unpickler (tensors, containers, numbers: no other class)."""
    import pickle

    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(error))
        if wanted:
            raise UntrustedArchiveError(f"{name}: payload {inner} needs the global {wanted.group(1)}, which torch's "
                                        f"weights-only unpickler refuses; {TRUST_HINT}") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
        raise UntrustedArchiveError(f"{name}: payload {inner} is not plain weights for torch's weights-only "
                                    f"unpickler ({detail.group(1).strip() if detail else 'refused'}); "
                                    f"{TRUST_HINT}") from None
    except Exception as error:  # not a pickle at all, truncated...
        raise UntrustedArchiveError(f"{name}: payload {inner} does not load as weights "
                                    f"({type(error).__name__}: {str(error)[:200]})") from None


def _check_program_json(program: Any, name: str, inner: str) -> None:
    if not isinstance(program, dict):
        raise UntrustedArchiveError(f"{name}: {inner} is not a serialized ExportedProgram")
    stack = [program]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            expression = value.get("expr_str")
            if isinstance(expression, str):
                _check_expression(expression, name, inner)
            elif expression is not None:
                raise UntrustedArchiveError(f"{name}: {inner} has a symbolic expression that is not a string")
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _check_expression(text: str, name: str, inner: str) -> None:
    """sympify evaluates the text as Python: only a plain expression over the admitted names may reach it."""
    problem = ""
    try:
        tree = ast.parse(text, mode="eval") if len(text) <= _MAX_EXPRESSION_CHARS else None
    except SyntaxError:
        tree = None
    if tree is None:
        problem = "not a plain expression"
    for node in (ast.walk(tree) if tree is not None else ()):
        if not isinstance(node, _EXPRESSION_NODES):
            problem = f"uses Python syntax {type(node).__name__}"
        elif isinstance(node, ast.Name) and node.id not in _SYMPY_NAMES and not _SYMBOL.fullmatch(node.id):
            problem = f"names {node.id!r}"
        elif isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            problem = "calls something other than a sympy function"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and not _WORD.fullmatch(node.value):
            problem = f"holds the string {node.value[:40]!r}"
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, int, float, bool, type(None))):
            problem = f"holds a {type(node.value).__name__} literal"
        if problem:
            break
    if problem:
        raise UntrustedArchiveError(f"{name}: {inner} has a symbolic shape expression that {problem} (sympy would "
                                    f"evaluate it as Python: {text[:80]!r}); {TRUST_HINT}")


def check_torchscript(file: IO[bytes], name: str) -> None:
    """Refuses a TorchScript archive whose code calls from_file; `file` is left at 0."""
    try:
        with zipfile.ZipFile(file) as archive:
            for member in archive.namelist():
                if member.partition("/")[2].startswith("code/") and member.endswith(".py") and re.search(
                        rb"\bfrom_file\b", archive.read(member)):
                    raise UntrustedArchiveError(f"{name}: {member} calls from_file, which maps a file of the host "
                                                f"into a tensor; {TRUST_HINT}")
    except zipfile.BadZipFile:
        pass  # torch's reader fails on it too, saying so
    finally:
        file.seek(0)


def check_program(ep: Any, name: str) -> None:
    """After loading: every graph (subgraphs included) calls only torch operators and the builtins torch's verifier
    admits, and holds only tensors as constants. Then ep.module() builds modules without guard code."""
    import torch
    from torch._export.verifier import Verifier
    from torch.utils._pytree import tree_leaves

    allowed = set(Verifier().allowed_builtin_ops()) | {
        torch.sym_int, torch.sym_float, torch.sym_ite, torch.sym_max, torch.sym_min, torch.sym_not, torch.sym_sqrt,
        torch.sym_sum, torch._C._set_grad_enabled, torch.autograd.grad_mode.set_grad_enabled,
        torch.amp.autocast_mode._enter_autocast, torch.amp.autocast_mode._exit_autocast}
    operators = (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator)
    refused_ops = {"aten::from_file": "maps a file of the host into a tensor"}

    def check_callable(target: Any, where: str) -> None:
        qualified = getattr(getattr(target, "_schema", None), "name", "")
        if qualified in refused_ops:
            raise UntrustedArchiveError(f"{name}: {where} calls {qualified}, which {refused_ops[qualified]}; "
                                        f"{TRUST_HINT}")
        if not isinstance(target, operators) and target not in allowed:
            raise UntrustedArchiveError(f"{name}: {where} calls {getattr(target, '__qualname__', target)!s}, which "
                                        f"is not a torch operator; {TRUST_HINT}")

    for module in ep.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in (graph.nodes if isinstance(graph, torch.fx.Graph) else ()):
            where = f"graph node {node.name}"
            if node.op not in ("placeholder", "get_attr", "call_function", "output"):
                raise UntrustedArchiveError(f"{name}: {where} is a {node.op} node, which exported programs do not "
                                            f"have; {TRUST_HINT}")
            if node.op == "call_function":
                check_callable(node.target, where)
                for leaf in tree_leaves((node.args, node.kwargs)):
                    if callable(leaf) and not isinstance(leaf, (torch.fx.Node, torch.fx.GraphModule)):
                        check_callable(leaf, f"an argument of {where}")
    for key, value in ep.constants.items():
        if not isinstance(value, torch.Tensor):
            raise UntrustedArchiveError(f"{name}: constant {key} is a {type(value).__name__}, not a tensor; "
                                        f"{TRUST_HINT}")
    ep.__class__ = _guardless_class(type(ep))  # every caller (other backends too), and copies, get it from here on


@functools.cache
def _guardless_class(program_class: type) -> type:
    """ExportedProgram whose module() never compiles guard code (Python source built from the archive's strings)."""

    class GuardlessExportedProgram(program_class):
        def module(self, check_guards: bool = False):
            return super().module(check_guards=False)

    return GuardlessExportedProgram
