"""`speedster-run backends`: every registered backend, asked through its own runner, with the truth about it."""

from __future__ import annotations

import argparse
import json

from tabulate import tabulate

from orchestrator.pool import CallFailure, RunnerPool
from orchestrator.sandboxes.local import LocalSandbox
from runners import registry


def backends_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speedster-run backends", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print JSON (a list, one object per backend) instead")
    args = parser.parse_args(argv)
    pool = RunnerPool(LocalSandbox(), threads=0)
    rows, records = [], []
    try:
        for name in registry.names():
            try:
                answer = pool.call(name, lambda c: c.describe())
            except CallFailure as error:
                rows.append([name, "no", "", "", "", f"runner failed: {error}"])
                records.append({"name": name, "available": False, "versions": {}, "devices": [], "offers": [],
                                "reason": f"runner failed: {error}"})
                continue
            records.append({"name": name, "available": answer.available, "versions": dict(answer.versions),
                            "devices": list(answer.devices), "reason": answer.unavailable_reason,
                            "offers": [{"precision": o.precision, "variant": o.variant, "devices": list(o.devices),
                                        "formats": list(o.formats)} for o in answer.offers]})
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
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    print(tabulate(rows, headers=["backend", "available", "versions", "devices", "offers", "reason"],
                   tablefmt="simple", disable_numparse=True))
    return 0
