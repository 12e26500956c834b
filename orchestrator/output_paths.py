"""Where a run writes (--report, --save, report_path=), checked before anything starts: a slip of the keyboard must
never overwrite the user's model or inputs, and an unwritable place must fail in one line, not after the whole run.

A report path may name a new file or a previous report (a rerun replaces it), nothing else: not the model, not an
input file (by path, symlink or hard link), not a directory, not any other file that happens to be there.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from orchestrator.errors import UserError

REPORT_KEYS = {"config", "candidates", "report_version"}  # fields every RunReport writes (orchestrator/report.py)
_REPORT_MAX_BYTES = 1 << 30  # no report is this large: a file that is cannot be one


def check_creatable(path: Path, option: str) -> None:
    """Files can be made at `path` (in it, when it is a directory): the closest existing directory accepts a new
    file (tried for real, so permissions and read-only mounts count as they will at the end of the run)."""
    try:
        _check_creatable(path, option)
    except OSError as error:  # a directory on the way that this user may not even look into
        raise UserError(f"{option} {path}: cannot write there ({error.strerror or error})") from None


def _check_creatable(path: Path, option: str) -> None:
    if path.is_symlink() and not path.exists():
        raise UserError(f"{option} {path}: a symlink to nothing ({os.readlink(path)}); give a real path")
    real = path.resolve()
    ancestor = real if real.is_dir() else real.parent
    while not os.path.lexists(ancestor):
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{option} {path}: {ancestor} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise UserError(f"{option} {path}: cannot write in {ancestor} ({error.strerror or error}); "
                        "choose a place you can write to") from None


def is_report(path: Path) -> bool:
    """Whether `path` holds a report.json speedster-run wrote (one a rerun may replace)."""
    try:
        if path.stat().st_size > _REPORT_MAX_BYTES:
            return False
        with open(path, "rb") as handle:
            if handle.read(1) != b"{":  # a model or an .npz fails here, without being read whole
                return False
            handle.seek(0)
            data = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and REPORT_KEYS <= data.keys()


def starts_with(marker: bytes) -> Callable[[Path], bool]:
    """A test for files whose first KiB holds `marker`: an earlier output of one kind (--junit, --html), which a rerun
    may replace."""

    def test(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                return marker in handle.read(1024)
        except OSError:
            return False

    return test


def any_file(path: Path) -> bool:
    """For outputs appended to (--summary-md, e.g. $GITHUB_STEP_SUMMARY): appending loses nothing."""
    return True


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths reach one file: equal once resolved, or one inode (symlinks and hard links)."""
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist
        return False


def check_report_path(path: Path, option: str, protected: Iterable[tuple[str, Path]] = (),
                      replaceable: Callable[[Path], bool] = is_report) -> None:
    """Refuses a report path that would overwrite anything but a previous report (of the kind `replaceable`
    recognises), or that cannot be written. `protected` holds (what it is, path) of the user's files the run reads:
    the model, the input files."""
    try:
        _check_report_path(path, option, protected, replaceable)
    except OSError as error:  # a directory on the way that this user may not even look into
        raise UserError(f"{option} {path}: cannot write there ({error.strerror or error})") from None


def _check_report_path(path: Path, option: str, protected: Iterable[tuple[str, Path]],
                       replaceable: Callable[[Path], bool]) -> None:
    for role, other in protected:
        if same_file(path, other):
            raise UserError(f"{option} {path} is {role}: writing the report would overwrite it; choose another file")
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory; give a file name, e.g. {path / 'report.json'}")
    if not path.exists():
        check_creatable(path, option)
        return
    if not replaceable(path):
        raise UserError(f"{option} {path}: exists and is not a report speedster-run wrote (only one of those is "
                        "replaced); choose another file")
    try:
        open(path, "r+b").close()  # opened for writing, not truncated: the previous report stays until the end
    except OSError as error:
        raise UserError(f"{option} {path}: cannot write it ({error.strerror or error})") from None


# What an existing file at each output option's path may be, to be replaced (or, for --summary-md, appended to).
OUTPUT_KINDS: dict[str, Callable[[Path], bool]] = {
    "--report": is_report,
    "--junit": starts_with(b'<testsuite name="speedster-run '),
    "--html": starts_with(b"<title>speedster-run: "),
    "--summary-md": any_file,
}
