"""The backend catalog is the one list of backends: the registry, the images (images/<name>/), both compose files and
the planner's originals all say what it says, and it can be read without any backend library.

A backend added in one place and not the others fails here, with the place named.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import compose_files, images, planner
from runners import registry
from speedster_run.shared import catalog

REPO = Path(__file__).resolve().parents[2]
NAMES = catalog.names()
# What reading the catalog and planning from it must not drag in: every backend's library, and the Docker SDK.
HEAVY = ("torch", "onnxruntime", "openvino", "nncf", "tvm", "iree", "tensorrt", "torch_xla", "torch_neuronx",
         "docker")


def test_names_are_unique_and_every_field_is_meaningful():
    assert len(set(NAMES)) == len(NAMES)
    ports = [entry.compose_port for entry in catalog.CATALOG]
    assert len(set(ports)) == len(ports), "two compose services would publish one host port"
    for entry in catalog.CATALOG:
        assert entry.devices and entry.formats and entry.compose_profile and entry.main_package, entry.name
        assert set(entry.original_for) <= set(entry.formats), entry.name
        assert entry.start_timeout_s > 0 and entry.compile_timeout_s > 0, entry.name
    assert set(catalog.cpu_image_backends()) <= set(catalog.compose_profiles()["cpu"])


def test_the_registry_builds_in_exactly_the_catalog():
    assert list(registry.BUILTIN) == list(NAMES)  # same order: the order a run tries backends in
    assert registry.BUILTIN == {entry.name: entry.implementation for entry in catalog.CATALOG}


@pytest.mark.parametrize("name", NAMES)
def test_each_implementation_declares_its_catalog_name(name):
    module_name, _, class_name = catalog.get(name).implementation.partition(":")
    assert getattr(importlib.import_module(module_name), class_name).name == name


def test_every_image_definition_is_a_catalog_backend_and_the_reverse():
    defined = {path.parent.name for path in (REPO / "images").glob("*/Dockerfile")}
    assert defined == set(NAMES)
    assert images.known_backends() == list(images.catalog_backends())


@pytest.mark.parametrize("name", NAMES)
def test_each_image_pins_its_backends_main_package(name):
    assert catalog.get(name).main_package in images.read_requirements(name)


@pytest.mark.parametrize("path", [compose_files.PLAIN_FILE, compose_files.TLS_FILE], ids=lambda p: p.name)
def test_each_compose_file_has_one_service_per_catalog_backend(path):
    services = yaml.safe_load(path.read_text())["services"]
    assert set(services) == set(NAMES)
    for name, service in services.items():
        entry = catalog.get(name)
        assert service["profiles"] == [entry.compose_profile], name
        assert service["command"][:2] == ["--backend", name], name
        published = re.fullmatch(r".+:\$\{(\w+):-(\d+)\}:(\d+)", service["ports"][0])
        assert published, service["ports"]
        assert published.groups() == (compose_files.port_variable(name), str(entry.compose_port),
                                      str(compose_files.CONTAINER_PORT)), name
        assert service["image"].endswith(f"}}{name}:${{SPEEDSTER_RUN_TAG:-{images.project_version()}}}"), name


@pytest.mark.parametrize("path", [compose_files.PLAIN_FILE, compose_files.TLS_FILE], ids=lambda p: p.name)
def test_the_committed_compose_files_are_the_renderers_output(path):
    assert path.read_text() == compose_files.RENDERERS[path](), \
        f"{path.relative_to(REPO)} differs from the catalog: run `speedster-run images compose`"
    assert path not in compose_files.stale_files()


def test_the_planner_runs_every_format_s_original_on_a_catalog_backend():
    formats = {fmt for entry in catalog.CATALOG for fmt in entry.formats}
    assert set(planner.ORIGINAL) == formats  # a model of any format has a baseline
    for fmt, (backend, precision, variant) in planner.ORIGINAL.items():
        assert backend == catalog.original_backend(fmt) and fmt in catalog.get(backend).formats
        assert (precision, variant) == ("fp32", catalog.get(backend).original_variant)


def test_the_catalog_and_the_planning_side_import_no_backend_library():
    # A fresh interpreter: this test process has imported backend libraries through other tests.
    implementations = [entry.implementation.partition(":")[0] for entry in catalog.CATALOG]
    code = "\n".join([
        "import importlib, json, sys",
        "import speedster_run.shared.catalog, orchestrator.planner, orchestrator.run, orchestrator.images",
        "import orchestrator.compose_files, runners.registry",
        f"for module in {implementations!r}:",
        "    importlib.import_module(module)  # what the registry resolves: the class, not its library",
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))",
    ])
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
