"""Backend registry: names -> backend classes, resolved lazily so that a missing library never breaks an import.

Built-in backends come from the backend catalog (speedster_run.shared.catalog), by module path. Third-party backends
join through the `speedster_run.backends` entry-point group, or (for tests and experiments) the SPEEDSTER_RUN_BACKENDS
variable: "name=module:Class,...".
"""

from __future__ import annotations

import importlib
import os
from importlib import metadata

from runners.backends.base import Backend, LoadedModel
from speedster_run.shared import catalog

ENTRY_POINT_GROUP = "speedster_run.backends"
ENV_VARIABLE = "SPEEDSTER_RUN_BACKENDS"

__all__ = ["Backend", "LoadedModel", "RegistryError", "backend_targets", "load_backend", "names"]  # LoadedModel: what
# a backend's load returns, named here for the orchestrator, which runs saved models in-process through this module

# Built-in name -> "module:Class", in the catalog's order (the order a run tries them in).
BUILTIN: dict[str, str] = {entry.name: entry.implementation for entry in catalog.CATALOG}


class RegistryError(Exception):
    """An unknown backend name, or two backends claiming one name."""


def _extra_from_env() -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in os.environ.get(ENV_VARIABLE, "").split(","))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise RegistryError(f"{ENV_VARIABLE}: expected name=module:Class, got {item!r}")
        extra[name.strip()] = target.strip()
    return extra


def backend_targets() -> dict[str, str]:
    """Every registered backend name -> "module:Class", refusing duplicates."""
    targets = dict(BUILTIN)
    sources = [(ep.name, ep.value) for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    sources += list(_extra_from_env().items())
    for name, target in sources:
        if name in targets and targets[name] != target:
            raise RegistryError(f"backend {name!r} is registered twice: {targets[name]} and {target}")
        targets[name] = target
    return targets


def names() -> list[str]:
    """Registered backend names, built-ins first."""
    return list(backend_targets())


def load_backend(name: str) -> Backend:
    """Instantiates a backend by name. Importing a backend module must not import its library (see base.py)."""
    targets = backend_targets()
    if name not in targets:
        raise RegistryError(f"unknown backend {name!r}; registered: {', '.join(targets)}")
    module_name, _, class_name = targets[name].partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend = backend_class()
    if backend.name != name:
        raise RegistryError(f"{targets[name]} declares name {backend.name!r}, registered as {name!r}")
    return backend
