"""Where save_model writes: a new or empty directory, or one holding exactly a previous save, which is replaced in
one step (Speedster replaced a save; a script run twice must not fail). Anything else there is the user's: refused.

A replacement is written beside the target (same parent, so a rename moves it) and swapped in with renames: until
the swap the previous save is untouched, and an interrupted or failed save leaves it as it was.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from orchestrator.artifacts import MANIFEST

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # renameat2(2): swap two paths atomically


def holds_exactly_a_save(directory: Path, api_file: str) -> bool:
    """True when the directory holds manifest.json, `api_file` and exactly the files the manifest lists: no other
    file, no extra directory, no symlink."""
    try:
        listed = json.loads((directory / MANIFEST).read_text())["files"]
        names = [PurePosixPath(name) for name in listed] if isinstance(listed, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if names is None or any(n.is_absolute() or ".." in n.parts or not n.parts for n in names):
        return False
    expected = {MANIFEST, api_file} | {n.as_posix() for n in names}
    needed_dirs = {parent.as_posix() for n in names for parent in n.parents if parent.parts}
    found_files, found_dirs = set(), set()
    for root, dirs, files in os.walk(directory):
        base = Path(root)
        for name in dirs + files:
            path = base / name
            relative = path.relative_to(directory).as_posix()
            if path.is_symlink():
                return False
            if path.is_dir():
                found_dirs.add(relative)
            elif path.is_file():
                found_files.add(relative)
            else:  # a socket, a fifo...
                return False
    return found_files == expected and found_dirs <= needed_dirs


def write_directory(source: Path, target: Path) -> None:
    """Copies `source` to `target` (absent, or a previous save that it replaces) through a directory beside it."""
    staging = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, staging)
        if os.path.lexists(target):
            exchange(staging, target)  # staging now holds the previous save
        else:
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def exchange(first: Path, second: Path) -> None:
    """Swaps two directories in one step (renameat2's RENAME_EXCHANGE), so that `second` is never missing; with two
    renames where the C library or the filesystem lacks it (`second` is then missing for an instant)."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(second))
    aside = first.with_name(first.name + ".previous")
    os.rename(second, aside)
    try:
        os.rename(first, second)
    except BaseException:
        os.rename(aside, second)
        raise
    os.rename(aside, first)
