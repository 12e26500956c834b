"""`speedster-run backends`: every registered backend, asked through its own runner, with the truth about it."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from orchestrator.pool import CallFailure, RunnerPool
from orchestrator.sandboxes.local import LocalSandbox
from runners import registry


def backends_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speedster-run backends", description=__doc__)
    parser.parse_args(argv)
    pool = RunnerPool(LocalSandbox(), threads=0)
    rows = []
    try:
        for name in registry.names():
            try:
                answer = pool.call(name, lambda c: c.describe())
            except CallFailure as error:
                rows.append([name, "no", "", "", "", f"runner failed: {error}"])
                continue
            offers = sorted({o.precision + ("" if o.variant == "default" else f"-{o.variant}") + "@" +
                             "/".join(o.devices) for o in answer.offers})
            rows.append([
                name,
                "yes" if answer.available else "no",
                ", ".join(f"{k} {v}" for k, v in answer.versions.items()),
                ", ".join(answer.devices),
                "\n".join(offers),
                answer.unavailable_reason,
            ])
    finally:
        pool.close()
    print(tabulate(rows, headers=["backend", "available", "versions", "devices", "offers", "reason"],
                   tablefmt="simple", disable_numparse=True))
    return 0
