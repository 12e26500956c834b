"""How the image tools report what they are doing: one line at a time, to a callable the command chooses."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], None]


def print_progress(message: str) -> None:
    print(message, flush=True)
