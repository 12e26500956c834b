"""Per-backend runner images: names, build, list, push and pull, through the Docker engine (docker SDK, lazily).

Every backend gets its own image, speedster-run/<backend>:<version>, with exactly one backend's toolchain in a venv
at /opt/venv and the runner as its entry point (images/<backend>/Dockerfile). Versions are pinned in one place,
images/<backend>/requirements.txt, and copied into the image's labels at build time.

Python packages never come from the network inside `docker build`: they are downloaded on the host into
images/.wheelhouse/<backend>/ (`pip download`, skipped while the requirements are unchanged) and installed from there
with `--no-index`. The project itself enters as a wheel built on the host (images/.wheelhouse/project/), in the last
layers, so that a code change rebuilds only those and a build with nothing changed is all cache.

Names: speedster-run/<backend>:<tag> locally, <registry>/speedster-run-<backend>:<tag> in a registry (one path
component per image, which every registry accepts), tag defaulting to the project's version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from orchestrator.errors import UserError

REPO = Path(__file__).resolve().parents[1]
IMAGES_DIR = REPO / "images"
WHEELHOUSE = IMAGES_DIR / ".wheelhouse"
PROJECT_WHEELS = WHEELHOUSE / "project"

NAMESPACE = "speedster-run"
# Built and tested on every machine (CPU only); the others build where their packages install (GPU hosts, clouds).
CPU_BACKENDS = ("onnxruntime", "openvino", "torch", "iree", "tvm")
ALL_BACKENDS = CPU_BACKENDS + ("tensorrt", "xla", "neuron", "onnxruntime-openvino")
LOCAL_BASE = "speedster-run/base:bookworm"  # debootstrap'ed here, where no image can be pulled
OFFICIAL_BASE = "python:3.11-slim-bookworm"  # the Dockerfiles' default, for hosts that can pull
PYTHON_VERSION = "3.11"  # of every image's venv: the host's wheels must match it

# What the docker sandbox needs to know to run an image (see images/README.md).
SOCKET_DIR = "/run/speedster"  # mount a host directory here: the runner listens on its socket
SOCKET_PATH = f"{SOCKET_DIR}/runner.sock"
RUNNER_UID = 10001
RUNNER_USER = f"{RUNNER_UID}:{RUNNER_UID}"

LABEL_BACKEND = "io.speedster-run.backend"
LABEL_VERSIONS = "io.speedster-run.versions"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_SOURCE = "org.opencontainers.image.source"
# Reproducible project wheels: same sources -> same bytes -> the image's COPY layer stays cached.
_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest date a zip file records

Progress = Callable[[str], None]


def _default_progress(message: str) -> None:
    print(message, flush=True)


# --- names ---------------------------------------------------------------------------------------------------------

def project_version() -> str:
    try:
        return metadata.version("speedster-run")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def image_name(backend: str, tag: str | None = None, registry: str | None = None) -> str:
    """speedster-run/<backend>:<tag> locally, <registry>/speedster-run-<backend>:<tag> in a registry.

    The tag defaults to the project's version, so an orchestrator finds the images built from its own sources.
    """
    tag = tag or project_version()
    if registry:
        return f"{registry.rstrip('/')}/{NAMESPACE}-{backend}:{tag}"
    return f"{NAMESPACE}/{backend}:{tag}"


def known_backends() -> list[str]:
    """Backends with an image definition (images/<backend>/Dockerfile), the CPU ones first."""
    found = {p.parent.name for p in IMAGES_DIR.glob("*/Dockerfile") if p.parent.name != "base"}
    if not IMAGES_DIR.is_dir():  # an installed package has no images/ directory: names only
        found = set(ALL_BACKENDS)
    return [b for b in ALL_BACKENDS if b in found] + sorted(found - set(ALL_BACKENDS))


def check_backends(backends: Iterable[str]) -> list[str]:
    known = known_backends()
    wanted = list(dict.fromkeys(backends))
    unknown = [b for b in wanted if b not in known]
    if unknown:
        raise UserError(f"no image definition for backend {', '.join(map(repr, unknown))}; "
                        f"images exist for: {', '.join(known)}")
    return wanted


# --- requirements and labels ---------------------------------------------------------------------------------------

def canonical(name: str) -> str:
    """PEP 503 normalised distribution name: ml_dtypes -> ml-dtypes."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_file(backend: str) -> Path:
    return IMAGES_DIR / backend / "requirements.txt"


def read_requirements(backend: str) -> dict[str, str]:
    """The pins of images/<backend>/requirements.txt: {canonical name: version}; every line must be name==version."""
    pins: dict[str, str] = {}
    path = requirements_file(backend)
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):  # comments and pip options (--extra-index-url ...)
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        if not match:
            raise UserError(f"{path}:{number}: expected name==version (every version of an image is pinned), "
                            f"got {line!r}")
        pins[canonical(match.group(1))] = match.group(2)
    return pins


def versions_label(backend: str) -> str:
    return json.dumps(read_requirements(backend), sort_keys=True, separators=(",", ":"))


def source_url() -> str:
    """Where the sources live, for org.opencontainers.image.source: the package's Source URL or the git remote."""
    try:
        for entry in metadata.metadata("speedster-run").get_all("Project-URL") or []:
            label, _, url = entry.partition(",")
            if label.strip().lower() in ("source", "repository", "homepage"):
                return url.strip()
    except metadata.PackageNotFoundError:
        pass
    try:
        remote = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True,
                                text=True, timeout=10)
        if remote.returncode == 0 and remote.stdout.strip():
            return remote.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "https://pypi.org/project/speedster-run/"


def image_labels(backend: str) -> dict[str, str]:
    return {
        LABEL_BACKEND: backend,
        LABEL_VERSIONS: versions_label(backend),
        LABEL_VERSION: project_version(),
        LABEL_SOURCE: source_url(),
    }


def dockerfile_args(backend: str) -> dict[str, str]:
    """The Dockerfile's ARG defaults (BASE_IMAGE, vendor index URLs...)."""
    args: dict[str, str] = {}
    for line in (IMAGES_DIR / backend / "Dockerfile").read_text().splitlines():
        match = re.match(r"\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)", line)
        if match:
            args.setdefault(match.group(1), match.group(2).strip("\"'"))
    return args


# --- the Docker engine ---------------------------------------------------------------------------------------------

def client():
    """A docker.DockerClient that answered a ping; a UserError (exit 2) with what to do otherwise."""
    try:
        import docker
    except ImportError:
        raise UserError("the docker SDK is not installed: pip install 'speedster-run[docker]'") from None
    try:
        engine = docker.from_env(timeout=600)
        engine.ping()
    except Exception as error:  # DockerException, requests' ConnectionError...
        detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise UserError(f"Docker engine not reachable: start dockerd (or set DOCKER_HOST) ({detail})") from None
    return engine


def image_exists(backend: str, tag: str | None = None) -> bool:
    import docker

    try:
        client().images.get(image_name(backend, tag))
    except docker.errors.ImageNotFound:
        return False
    return True


def image_info(backend: str, tag: str | None = None) -> dict:
    """{"name", "id", "repo_digests", "labels", "size", "created", "user"} of a backend's local image.

    Raises UserError when the image does not exist (build it with `speedster-run images build BACKEND`).
    """
    import docker

    name = image_name(backend, tag)
    try:
        image = client().images.get(name)
    except docker.errors.ImageNotFound:
        raise UserError(f"no image {name}: run `speedster-run images build {backend}`") from None
    attrs = image.attrs
    return {
        "name": name,
        "id": image.id,
        "repo_digests": list(attrs.get("RepoDigests") or []),
        "labels": dict(image.labels or {}),
        "size": int(attrs.get("Size") or 0),
        "created": attrs.get("Created", ""),
        "user": (attrs.get("Config") or {}).get("User", ""),
    }


# --- the base image (no registry) ----------------------------------------------------------------------------------

def build_base(name: str = LOCAL_BASE, progress: Progress = _default_progress, force: bool = False) -> float:
    """Debian bookworm with python3, python3-venv and ca-certificates, from debootstrap, imported as `name`.

    Returns the seconds it took (0.0 when the image exists and force is False).
    """
    engine = client()
    if not force and _exists(engine, name):
        progress(f"base image {name} exists; not rebuilt (`speedster-run images base --force` rebuilds it)")
        return 0.0
    debootstrap = shutil.which("debootstrap") or ("/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists()
                                                   else None)
    if debootstrap is None:
        raise UserError(f"base image {name} is missing and debootstrap is not installed: apt-get install debootstrap "
                        f"(or pass --base {OFFICIAL_BASE} where images can be pulled)")
    if os.geteuid() != 0:
        raise UserError(f"building the base image {name} with debootstrap needs root (or pass --base {OFFICIAL_BASE} "
                        "where images can be pulled)")
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="speedster-run-base-"))
    rootfs, archive = workdir / "rootfs", workdir / "rootfs.tar"
    try:
        progress(f"base image {name}: debootstrap bookworm (python3, python3-venv, ca-certificates)...")
        command = [debootstrap, "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                   "bookworm", str(rootfs)]
        mirror = os.environ.get("SPEEDSTER_RUN_DEBIAN_MIRROR")
        if mirror:
            command.append(mirror)
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            tail = [line for line in result.stdout.splitlines() if line.strip()][-1:] or ["(no output)"]
            log = rootfs / "debootstrap" / "debootstrap.log"
            raise UserError(f"debootstrap failed ({result.returncode}): {tail[0]}"
                            + (f" (see {log})" if log.exists() else ""))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        progress(f"base image {name}: importing ({_du(rootfs) / 1e6:.0f} MB)...")
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], check=True)
        shutil.rmtree(rootfs)
        repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
        engine.api.import_image_from_file(
            str(archive), repository=repository, tag=tag,
            changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]'])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    seconds = time.perf_counter() - started
    progress(f"base image {name} built in {seconds:.1f} s")
    return seconds


def _exists(engine, name: str) -> bool:
    import docker

    try:
        engine.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# --- wheelhouses ---------------------------------------------------------------------------------------------------

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
                       progress: Progress = _default_progress) -> Path:
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


def build_project_wheel(progress: Progress = _default_progress) -> Path:
    """images/.wheelhouse/project/speedster_run-<version>-py3-none-any.whl, byte-identical for identical sources."""
    if not (REPO / "pyproject.toml").exists():
        raise UserError(f"building images needs a source checkout of speedster-run ({REPO / 'pyproject.toml'} "
                        "not found)")
    PROJECT_WHEELS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="speedster-run-wheel-") as tmp:
        sources, out = Path(tmp) / "src", Path(tmp) / "out"
        sources.mkdir()
        _project_sources(sources)
        env = dict(os.environ, SOURCE_DATE_EPOCH=_SOURCE_DATE_EPOCH)
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


# --- building ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BuildResult:
    backend: str
    name: str
    image_id: str
    seconds: float
    steps: int
    cached_steps: int

    @property
    def all_cached(self) -> bool:
        return self.steps > 0 and self.cached_steps == self.steps


def _context_tar(backend: str) -> tempfile.SpooledTemporaryFile:
    """The build context: this image's directory, its wheelhouse and the project wheel; nothing else.

    Paths are those of the repository, so the Dockerfile also builds from the repository root (.dockerignore keeps
    that context small too). Owners, modes and times are normalised: the context's bytes depend on contents only.
    """
    buffer = tempfile.SpooledTemporaryFile(max_size=8 << 20, prefix="speedster-run-context-")
    roots = [IMAGES_DIR / backend, WHEELHOUSE / backend, PROJECT_WHEELS]
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for root in roots:
            for path in sorted([root, *root.rglob("*")]):
                if path.is_symlink() or not (path.is_file() or path.is_dir()):
                    continue
                info = tarfile.TarInfo(str(path.relative_to(REPO)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = int(_SOURCE_DATE_EPOCH)
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = path.stat().st_size, 0o644
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
    buffer.seek(0)
    return buffer


def build_image(backend: str, base: str = LOCAL_BASE, tag: str | None = None, registry: str | None = None,
                build_args: dict[str, str] | None = None, no_cache: bool = False,
                progress: Progress = _default_progress, quiet: bool = False) -> BuildResult:
    """Builds speedster-run/<backend>:<tag> (and tags it for the registry when one is given).

    Expects the wheelhouse and the project wheel to be ready (prepare_wheelhouse, build_project_wheel).
    """
    import docker

    engine = client()
    name = image_name(backend, tag)
    previous = _image_id(engine, name)
    args = {"BASE_IMAGE": base, **(build_args or {})}
    started = time.perf_counter()
    steps = cached = layerless = 0
    seen_from = False
    last_lines: list[str] = []
    image_id = ""
    context = _context_tar(backend)
    try:
        stream = engine.api.build(
            fileobj=context, custom_context=True, dockerfile=f"images/{backend}/Dockerfile", tag=name,
            buildargs=args, labels=image_labels(backend), rm=True, forcerm=True, nocache=no_cache, pull=False,
            decode=True)
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error") or "unknown error"
                raise UserError(_build_error(backend, base, message, last_lines))
            text = chunk.get("stream")
            if text is None:
                if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
                continue
            for line in text.splitlines():
                step = re.match(r"Step \d+/\d+ : (\w+)", line)
                if step:
                    steps += 1
                    last_lines = [line]
                    instruction = step.group(1).upper()
                    seen_from = seen_from or instruction == "FROM"
                    layerless += instruction == "FROM" or (instruction == "ARG" and not seen_from)
                elif line.strip() == "---> Using cache":
                    cached += 1
                elif line.strip():
                    last_lines = (last_lines + [line])[-20:]
                if not quiet and line.strip():
                    progress(f"  {backend} | {line}")
    except docker.errors.APIError as error:
        raise UserError(_build_error(backend, base, error.explanation or str(error), last_lines)) from None
    finally:
        context.close()
    # FROM steps, and ARGs before the first FROM, make no layer and never say "Using cache": they count as cached.
    cached = min(steps, cached + layerless)
    image = engine.images.get(name)
    if previous and previous != image.id:
        _remove_if_unused(engine, previous)
    if registry:
        repository, _, remote_tag = image_name(backend, tag, registry).rpartition(":")
        image.tag(repository, remote_tag)
    seconds = time.perf_counter() - started
    return BuildResult(backend, name, image_id or image.id, seconds, steps, cached)


def _image_id(engine, name: str) -> str | None:
    import docker

    try:
        return engine.images.get(name).id
    except docker.errors.ImageNotFound:
        return None


def _remove_if_unused(engine, image_id: str) -> None:
    """Removes the image a rebuild replaced, unless something still uses or names it: rebuilds leave no litter."""
    import docker

    try:
        if not engine.images.get(image_id).tags:
            engine.images.remove(image_id, noprune=False)
    except docker.errors.APIError:  # a container still uses it, or it is gone already
        pass


def _build_error(backend: str, base: str, message: str, last_lines: list[str]) -> str:
    message = " ".join(message.split())
    step = next((line for line in last_lines if line.startswith("Step ")), "")
    if re.search(r"Step \d+/\d+ : FROM ", step) and re.search(
            r"pull access denied|manifest unknown|not found|repository does not exist|dial tcp|no such host|"
            r"TLS handshake|i/o timeout|connection refused|registry", message):
        return (f"{backend}: base image {base} is not here and cannot be pulled ({message[:160]}); "
                f"use --base {LOCAL_BASE} (built here with debootstrap) where no registry is reachable")
    noise = ("---> ", "Removing intermediate container", "Running in ")
    detail = [line.strip() for line in last_lines[1:] if line.strip() and not line.strip().startswith(noise)]
    code = re.search(r"returned a non-zero code: (\d+)", message)
    if code:
        message = f"exit status {code.group(1)}"
    where = f" at {step[:120]}{'...' if len(step) > 120 else ''}" if step else ""
    hint = f"; last output: {detail[-1][:200]}" if detail else ""
    return f"{backend}: image build failed{where}: {message[:300]}{hint}"


def build(backends: Iterable[str], base: str = LOCAL_BASE, tag: str | None = None, registry: str | None = None,
          build_args: dict[str, str] | None = None, no_cache: bool = False, progress: Progress = _default_progress,
          quiet: bool = False) -> list[BuildResult]:
    """The whole `images build`: base image if it is the local one and missing, wheelhouses, project wheel, images."""
    backends = check_backends(backends)
    client()
    if base == LOCAL_BASE:
        build_base(base, progress=progress)
    for backend in backends:
        prepare_wheelhouse(backend, build_args, progress=progress)
    build_project_wheel(progress=progress)
    results = []
    for backend in backends:
        progress(f"{backend}: building {image_name(backend, tag)} from {base} ...")
        result = build_image(backend, base=base, tag=tag, registry=registry, build_args=build_args,
                             no_cache=no_cache, progress=progress, quiet=quiet)
        cache_note = ("all layers cached" if result.all_cached
                      else f"{result.cached_steps} of {result.steps} steps cached")
        progress(f"{backend}: built {result.name} ({result.image_id[7:19]}) in {result.seconds:.1f} s, {cache_note}")
        results.append(result)
    return results


# --- registry ------------------------------------------------------------------------------------------------------

def _stream_errors(chunks, what: str) -> None:
    for chunk in chunks:
        if "error" in chunk or "errorDetail" in chunk:
            message = (chunk.get("errorDetail") or {}).get("message") or chunk.get("error")
            raise UserError(f"{what} failed: {' '.join(str(message).split())[:300]}")


def push(backend: str, registry: str, tag: str | None = None, progress: Progress = _default_progress) -> str:
    """Tags speedster-run/<backend>:<tag> as <registry>/speedster-run-<backend>:<tag> and pushes it."""
    import docker

    engine = client()
    local, remote = image_name(backend, tag), image_name(backend, tag, registry)
    try:
        image = engine.images.get(local)
    except docker.errors.ImageNotFound:
        raise UserError(f"no image {local} to push: run `speedster-run images build {backend}` first") from None
    repository, _, remote_tag = remote.rpartition(":")
    image.tag(repository, remote_tag)
    progress(f"{backend}: pushing {remote} ...")
    try:
        _stream_errors(engine.api.push(repository, tag=remote_tag, stream=True, decode=True), f"push of {remote}")
    except docker.errors.APIError as error:
        raise UserError(f"push of {remote} failed: {error.explanation or error}") from None
    return remote


def pull(backend: str, registry: str, tag: str | None = None, progress: Progress = _default_progress) -> str:
    """Pulls <registry>/speedster-run-<backend>:<tag> and tags it speedster-run/<backend>:<tag>, the local name."""
    import docker

    engine = client()
    local, remote = image_name(backend, tag), image_name(backend, tag, registry)
    repository, _, remote_tag = remote.rpartition(":")
    progress(f"{backend}: pulling {remote} ...")
    try:
        _stream_errors(engine.api.pull(repository, tag=remote_tag, stream=True, decode=True), f"pull of {remote}")
        image = engine.images.get(remote)
    except (docker.errors.APIError, docker.errors.ImageNotFound) as error:
        explanation = getattr(error, "explanation", None) or str(error)
        raise UserError(f"pull of {remote} failed: {' '.join(str(explanation).split())[:300]}") from None
    local_repository, _, local_tag = local.rpartition(":")
    image.tag(local_repository, local_tag)
    return local


# --- listing -------------------------------------------------------------------------------------------------------

CORE_PACKAGES = {"grpcio", "grpcio-health-checking", "protobuf", "ml-dtypes", "tabulate", "onnx"}


def list_images(tag: str | None = None) -> list[dict]:
    """One entry per known backend: its image's facts, or {"backend", "name", "missing": True}."""
    import docker

    engine = client()
    entries = []
    for backend in known_backends():
        name = image_name(backend, tag)
        try:
            image = engine.images.get(name)
        except docker.errors.ImageNotFound:
            entries.append({"backend": backend, "name": name, "missing": True})
            continue
        labels = image.labels or {}
        try:
            versions = json.loads(labels.get(LABEL_VERSIONS, "{}"))
        except ValueError:
            versions = {}
        entries.append({
            "backend": backend, "name": name, "missing": False, "id": image.id,
            "digests": list(image.attrs.get("RepoDigests") or []), "size": int(image.attrs.get("Size") or 0),
            "created": image.attrs.get("Created", ""), "versions": versions,
            "stale": versions != _pins_or_none(backend),
        })
    return entries


def _pins_or_none(backend: str) -> dict[str, str] | None:
    try:
        return read_requirements(backend)
    except (OSError, UserError):
        return None


def human_size(size: int) -> str:
    """Sizes as `docker images` prints them (powers of 1000)."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"
