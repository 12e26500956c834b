"""The base image every runner image starts from where no registry can be reached: Debian bookworm made here with
debootstrap and imported into the engine (python3, python3-venv, ca-certificates)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.images.engine import client, find
from orchestrator.images.progress import Progress, print_progress

LOCAL_BASE = "speedster-run/base:bookworm"  # debootstrap'ed here, where no image can be pulled
OFFICIAL_BASE = "python:3.11-slim-bookworm"  # the Dockerfiles' default, for hosts that can pull


def build_base(name: str = LOCAL_BASE, progress: Progress = print_progress, force: bool = False) -> float:
    """Debian bookworm with python3, python3-venv and ca-certificates, from debootstrap, imported as `name`.

    Returns the seconds it took (0.0 when the image exists and force is False).
    """
    engine = client()
    if not force and find(engine, name) is not None:
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


def _du(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
