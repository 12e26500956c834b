"""What a runner container may see of the user's files: only those it needs (the model and its external data),
staged into a directory of the run's own that the runner user can read, so that the user changes nothing.

A file is hard-linked where that is possible and already readable by others (no copy, and nothing shown that was
not already readable); otherwise copied, readable. The user's files and permissions are never modified.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from orchestrator.errors import UserError

_STAGED_DIR_MODE = 0o755
_STAGED_COPY_MODE = 0o444
# link(2) refusing: another filesystem, no permission (protected_hardlinks), too many links, no hard links at all.
_CANNOT_LINK = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def stage_files(directory: Path, files: Iterable[Path], into: Path) -> None:
    """Puts each of `files` (inside `directory`) at the same relative place under `into`, readable by any user."""
    into.mkdir(exist_ok=True)
    into.chmod(_STAGED_DIR_MODE)
    for file in files:
        relative = Path(os.path.relpath(os.path.abspath(file), directory))
        if relative.parts[:1] == ("..",) or relative.is_absolute():
            raise UserError(f"{file} is outside the model's directory {directory}; the runners see only that")
        if not os.path.exists(file):  # external data the model names but lacks: the runner reports it
            continue
        target = into / relative
        if os.path.lexists(target):
            continue
        for parent in reversed(relative.parents[:-1]):
            (into / parent).mkdir(exist_ok=True)
            (into / parent).chmod(_STAGED_DIR_MODE)
        try:
            _link_or_copy(Path(file), target)
        except OSError as error:
            raise UserError(f"cannot stage {file} for the runner containers into {into}: "
                            f"{error.strerror or error}") from None


def _link_or_copy(source: Path, target: Path) -> None:
    if os.stat(source).st_mode & stat.S_IROTH:
        try:
            os.link(source, target)  # follows a symlinked model file to the data itself
            return
        except OSError as error:
            if error.errno not in _CANNOT_LINK:
                raise
    shutil.copyfile(source, target)
    target.chmod(_STAGED_COPY_MODE)
