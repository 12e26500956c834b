"""Numbers as people read them: three significant digits whatever the scale (0.0186 ms, 1.49 ms, 21.5x, 1234 ms),
so that a ratio never looks inconsistent with the two figures printed beside it."""

from __future__ import annotations

import math


def significant(value: float, digits: int = 3) -> str:
    """`value` with `digits` significant digits, never in scientific notation (large values keep their integer
    digits: 1234.5 -> "1234")."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def ratio(value: float) -> str:
    return significant(value) + "x"


def ratio_with_interval(value: float, interval: tuple[float, float] | list[float] | None) -> str:
    """"21.5x [21.1-21.8]", or the ratio alone when there is no interval."""
    if not interval:
        return ratio(value)
    low, high = interval
    return f"{ratio(value)} [{significant(low)}-{significant(high)}]"


def speedup_text(candidate: dict) -> str:
    """A report row's speedup with its interval (the original's alone), "" when it was not measured."""
    if candidate.get("speedup") is None:
        return ""
    interval = None if candidate.get("is_original") else candidate.get("speedup_ci")
    return ratio_with_interval(candidate["speedup"], interval)
