"""Building runner images: the build context (the image's directory, its wheelhouse, the project wheel), the
engine's build with its cache accounting, and the whole `images build` (base image, wheelhouses, then images).

Every backend gets its own image with exactly one backend's toolchain in a venv at /opt/venv and the runner as its
entry point (images/<backend>/Dockerfile); its pins are copied into the image's labels.
"""

from __future__ import annotations

import dataclasses
import re
import tarfile
import tempfile
import time
from collections.abc import Iterable

from orchestrator.errors import UserError
from orchestrator.images.base_image import LOCAL_BASE, build_base
from orchestrator.images.engine import client, find
from orchestrator.images.labels import image_labels
from orchestrator.images.names import check_backends, image_name
from orchestrator.images.paths import IMAGES_DIR, PROJECT_WHEELS, REPO, WHEELHOUSE
from orchestrator.images.progress import Progress, print_progress
from orchestrator.images.wheels import SOURCE_DATE_EPOCH, build_project_wheel, prepare_wheelhouse


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
                info.mtime = int(SOURCE_DATE_EPOCH)
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
                progress: Progress = print_progress, quiet: bool = False) -> BuildResult:
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
    image = find(engine, name)
    return image.id if image is not None else None


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
          build_args: dict[str, str] | None = None, no_cache: bool = False, progress: Progress = print_progress,
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
