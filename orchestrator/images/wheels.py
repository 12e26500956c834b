"""Wheelhouses: every Python package an image installs, fetched on the host, so that `docker build` never reaches
the network.

The backend's pins are downloaded into images/.wheelhouse/<backend>/ (`pip download`, skipped while the requirements
are unchanged) and installed from there with `--no-index`. The project itself enters as a wheel built on the host
(images/.wheelhouse/project/), byte-identical for identical sources, so that its image layer stays cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.images.contract import PYTHON_VERSION
from orchestrator.images.definitions import dockerfile_args
from orchestrator.images.paths import PROJECT_WHEELS, REPO, WHEELHOUSE, requirements_file
from orchestrator.images.progress import Progress, print_progress

# Reproducible project wheels and build contexts: same sources -> same bytes -> the image's COPY layer stays cached.
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip file records


def _stamp_path(backend: str) -> Path:
    return WHEELHOUSE / f"{backend}.sha256"


def _pip_download_command(backend: str, target: Path) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "-d", str(target),
               "-r", str(requirements_file(backend))]
    if sys.version_info[:2] != tuple(int(p) for p in PYTHON_VERSION.split(".")):
        # The host's Python differs from the images': ask for wheels of the images' Python instead.
        command += ["--python-version", PYTHON_VERSION, "--only-binary=:all:"]
    return command


def prepare_wheelhouse(backend: str, build_args: dict[str, str] | None = None,
                       progress: Progress = print_progress) -> Path:
    """images/.wheelhouse/<backend>/: every wheel the image installs, downloaded on the host.

    Skipped while a stamp records the same requirements (and download settings). The Dockerfile's ARGs (and
    --build-arg) are in the environment of `pip download`, so requirements.txt can say `--extra-index-url
    ${NEURON_PIP_INDEX}`.
    """
    target = WHEELHOUSE / backend
    env = dict(os.environ)
    env.update(dockerfile_args(backend))
    env.update(build_args or {})
    command = _pip_download_command(backend, target)
    variables = sorted(set(re.findall(r"\$\{([A-Z0-9_]+)\}", requirements_file(backend).read_text())))
    digest = hashlib.sha256("\n".join([requirements_file(backend).read_text(), PYTHON_VERSION, *command[10:],
                                       *(f"{v}={env.get(v, '')}" for v in variables)]).encode()).hexdigest()
    stamp = _stamp_path(backend)
    if target.is_dir() and stamp.exists() and stamp.read_text().strip() == digest:
        progress(f"{backend}: wheelhouse up to date ({len(list(target.glob('*.whl')))} wheels)")
        return target
    progress(f"{backend}: downloading wheels into {target.relative_to(REPO)} ...")
    started = time.perf_counter()
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    stamp.unlink(missing_ok=True)
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stdout.splitlines() if line.strip() and "is ignored" not in line]
        errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:] or ["(no output)"]
        raise UserError(f"{backend}: pip download of {requirements_file(backend).relative_to(REPO)} failed: "
                        f"{errors[0]}")
    _sdists_to_wheels(backend, target)
    stamp.write_text(digest + "\n")
    wheels = list(target.glob("*"))
    progress(f"{backend}: {len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 1e6:.0f} MB, "
             f"in {time.perf_counter() - started:.1f} s")
    return target


def _sdists_to_wheels(backend: str, target: Path) -> None:
    """Builds a wheel from each source distribution in the wheelhouse (tensorrt-cu12 is one), on the host: the image
    then installs wheels only, with no build tools and no index."""
    for sdist in sorted(p for p in target.iterdir() if p.name.endswith((".tar.gz", ".zip", ".tar.bz2"))):
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                                 "-q", "-w", str(target), str(sdist)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            lines = [line for line in result.stdout.splitlines() if line.strip()]
            raise UserError(f"{backend}: building a wheel from {sdist.name} failed: {(lines or ['(no output)'])[-1]}")
        sdist.unlink()


def _project_sources(destination: Path) -> None:
    """Copies what the wheel is built from (top-level files, the packages' directories) into a clean tree: a build in
    the checkout would reuse its build/ directory, where a deleted module lives on."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools_config = config.get("tool", {}).get("setuptools", {})
    package_dirs = setuptools_config.get("package-dir", {})
    tops = set()
    for package in setuptools_config.get("packages", []):
        root = package.split(".")[0]
        tops.add(package_dirs.get(root, root).split("/")[0])
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for path in REPO.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, destination / path.name)
        elif path.is_dir() and path.name in tops:
            shutil.copytree(path, destination / path.name, ignore=ignore)


def build_project_wheel(progress: Progress = print_progress) -> Path:
    """images/.wheelhouse/project/speedster_run-<version>-py3-none-any.whl, byte-identical for identical sources."""
    if not (REPO / "pyproject.toml").exists():
        raise UserError(f"building images needs a source checkout of speedster-run ({REPO / 'pyproject.toml'} "
                        "not found)")
    PROJECT_WHEELS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speedster-run-wheel-") as tmp:
        sources, out = Path(tmp) / "src", Path(tmp) / "out"
        sources.mkdir()
        _project_sources(sources)
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                   "-w", str(out), str(sources)]
        if importlib.util.find_spec("setuptools") is not None:
            command.insert(5, "--no-build-isolation")  # an isolated build would fetch setuptools from an index
        result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=tmp)
        built = list(out.glob("*.whl"))
        if result.returncode != 0 or len(built) != 1:
            lines = [line for line in result.stdout.splitlines() if line.strip()]
            raise UserError(f"building the project wheel failed: {(lines or ['(no output)'])[-1]}")
        wheel = built[0]
        target = PROJECT_WHEELS / wheel.name
        if not (target.exists() and target.read_bytes() == wheel.read_bytes()):
            for old in PROJECT_WHEELS.glob("*.whl"):
                old.unlink()
            shutil.copyfile(wheel, target)
    progress(f"project wheel: {target.relative_to(REPO)}")
    return target
