"""The layering, read from the source's imports (every import statement, including those inside functions):

    orchestrator  ->  speedster_run (generated protocol + shared layer)  <-  runners
    orchestrator  ->  runners.registry only (to run a saved model in-process)

so that the runners' images need the runner side and the shared layer alone, and a change inside a backend cannot
reach the orchestrator except through the protocol.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / "proto" / "speedster_run"
ORCHESTRATOR_MAY_IMPORT_FROM_RUNNERS = {"runners.registry"}


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement in `path` names ("from a.b import c" counts as a.b and a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def imports_of(tree: Path, top: str) -> dict[str, set[str]]:
    """file (relative to the repository) -> the modules of package `top` it imports."""
    result = {}
    for path in sorted(tree.rglob("*.py")):
        hits = {m for m in imported_modules(path) if m == top or m.startswith(top + ".")}
        if hits:
            result[str(path.relative_to(REPO))] = hits
    return result


def test_the_reader_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from runners.backends import torch\n    import runners.servicer\n")
    assert imported_modules(sample) == {"runners.backends", "runners.backends.torch", "runners.servicer"}


def test_the_orchestrator_imports_nothing_of_the_runners_but_the_registry():
    offending = {}
    for file, modules in imports_of(REPO / "orchestrator", "runners").items():
        # "from runners import registry" names the package itself and its module
        extra = modules - ORCHESTRATOR_MAY_IMPORT_FROM_RUNNERS - {"runners"}
        if extra:
            offending[file] = sorted(extra)
    assert not offending, f"the orchestrator reaches into runners/ (use speedster_run.shared): {offending}"


@pytest.mark.parametrize("top", ["orchestrator", "runners"])
def test_the_shared_layer_depends_on_neither_side(top):
    assert not imports_of(SHARED, top), f"speedster_run imports {top}: {imports_of(SHARED, top)}"


def test_the_runners_import_nothing_of_the_orchestrator():
    assert not imports_of(REPO / "runners", "orchestrator")


ORCHESTRATOR_ONLY_PACKAGES = ("tabulate", "docker", "yaml")  # the table, the docker SDK, test tooling


@pytest.mark.parametrize("tree", ["runners", "proto/speedster_run"])
def test_the_runner_side_needs_none_of_the_orchestrators_dependencies(tree):
    """Runner images install the runner side, the shared layer and their backend, nothing the orchestrator needs."""
    found = {file: modules for package in ORCHESTRATOR_ONLY_PACKAGES
             for file, modules in imports_of(REPO / tree, package).items()}
    assert not found, f"{tree} imports what only the orchestrator needs: {found}"
