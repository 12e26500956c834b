"""speedster-run compare BASE.json NEW.json [--max-regression 0.05]: two runs side by side, per candidate and for
the winner, each ratio with its 95% interval. Exit 0 when the new winner is not slower beyond the threshold and the
noise, 1 when it is (or the new run has no winner), 2 when the reports cannot be read or compared."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.regression_gate import DEFAULT_MAX_REGRESSION, EXIT_OK, EXIT_REGRESSION, compare_reports, \
    load_report, render


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 10.0:
        raise argparse.ArgumentTypeError(f"{text}: a fraction such as 0.05 (5%)")
    return value


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speedster-run compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", type=Path, help="the baseline run's report.json (e.g. main's, kept as an artifact)")
    parser.add_argument("new", type=Path, help="the new run's report.json")
    parser.add_argument("--max-regression", type=_fraction, default=DEFAULT_MAX_REGRESSION,
                        help=f"the slowdown of the winner tolerated, as a fraction (default {DEFAULT_MAX_REGRESSION})")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the comparison as JSON")
    return parser


def compare_command(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    comparison = compare_reports(load_report(args.base), load_report(args.new), args.max_regression)
    print(render(comparison), end="")
    if args.json is not None:
        args.json.write_text(json.dumps({"regression": comparison.regression, "verdict": comparison.verdict,
                                         "notes": comparison.notes,
                                         "winner": vars(comparison.winner) if comparison.winner else None,
                                         "candidates": [vars(row) for row in comparison.rows]}, indent=1) + "\n")
    return EXIT_REGRESSION if comparison.regression else EXIT_OK
