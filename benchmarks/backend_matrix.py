"""Every backend on one model, in the local sandbox and in Docker: one speedster-run per sandbox, one table.

    python benchmarks/backend_matrix.py --model resnet50 [--sandboxes local,docker] [--threads 2]
        [--time-budget 3] [--samples 4] [--tune-budget 300] [--ignore-backends tvm] [--out DIR]

Models: `resnet50` (orchestrator/zoo.py, 1x3x224x224) and `bert` (a BERT-base-sized encoder built from a
transformers config with random weights: 12 layers, hidden 768, 12 heads; input_ids, attention_mask and
token_type_ids of 1x128). Each sandbox's run writes DIR/<model>-<sandbox>.json; the table has each candidate's
compile seconds and median latency per sandbox, and the docker/local ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bert_base(directory: Path) -> Path:
    """A BERT-base-sized encoder as a torch.export archive with its input specs, made by the Python API's export."""
    import torch
    import transformers

    from orchestrator.api.export import export
    from orchestrator.api.input_data import normalize

    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig()).eval()  # BERT-base's sizes, random weights
    ids = torch.randint(1000, 30000, (1, 128))
    samples = normalize([{"input_ids": ids, "attention_mask": torch.ones_like(ids),
                          "token_type_ids": torch.zeros_like(ids)}])
    path, _ = export(model, samples, {}, directory)
    return path


def model_file(name: str, directory: Path) -> Path:
    if name == "bert":
        return bert_base(directory)
    path = directory / f"{name}.pt2"
    subprocess.run([sys.executable, "-m", "orchestrator.zoo", name, str(path)], check=True, cwd=REPO)
    return path


def run(model: Path, sandbox: str, report: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "orchestrator.cli", "--model", str(model), "--sandbox", sandbox,
               "--threads", str(args.threads), "--time-budget", str(args.time_budget), "--samples", str(args.samples),
               "--report", str(report)]
    if args.ignore_backends:
        command += ["--ignore-backends", args.ignore_backends]
    if args.tune_budget and sandbox == "local":  # tuning records live in the runner's cache: tuned once, here
        command += ["--tune-budget", str(args.tune_budget)]
    print("$", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=REPO, check=False)
    return json.loads(report.read_text())


def table(reports: dict[str, dict]) -> str:
    sandboxes = list(reports)
    rows: dict[str, dict[str, dict]] = {}
    for sandbox, report in reports.items():
        for row in report["candidates"]:
            rows.setdefault(row["name"], {})[sandbox] = row
    header = ["candidate"] + [f"{s} {what}" for s in sandboxes for what in ("compile s", "median ms")]
    if len(sandboxes) == 2:
        header.append(f"{sandboxes[1]}/{sandboxes[0]}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(row: dict | None) -> list[str]:
        if row is None:
            return ["", "not run"]
        if row["failure"]:
            return ["", f"{row['failure']['category']}: {row['failure']['message'][:50]}"]
        compile_s = "" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
        return [compile_s, f"{row['stats']['median_ms']:.2f}" if row["stats"] else ""]

    order = sorted(rows, key=lambda n: min((r["stats"]["median_ms"] for r in rows[n].values() if r["stats"]),
                                            default=float("inf")))
    for name in order:
        per = rows[name]
        cells = [name] + [c for s in sandboxes for c in cell(per.get(s))]
        if len(sandboxes) == 2:
            a, b = (per.get(s) for s in sandboxes)
            ratio = (b["stats"]["median_ms"] / a["stats"]["median_ms"]) if a and b and a["stats"] and b["stats"] else None
            cells.append("" if ratio is None else f"{ratio:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    winners = ", ".join(f"{s}: {r['winner']}" for s, r in reports.items())
    return "\n".join(lines) + f"\n\nWinners: {winners}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", choices=("resnet50", "bert", "resnet18", "tiny_cnn"))
    parser.add_argument("--sandboxes", default="local,docker")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--time-budget", type=float, default=3.0)
    parser.add_argument("--samples", type=int, default=4, help="input sets for the accuracy check (default 4)")
    parser.add_argument("--tune-budget", type=float, default=None)
    parser.add_argument("--ignore-backends", default="", help="comma-separated, passed to speedster-run")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="backend-matrix-"))
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)  # the containers' runner user reads the model from here
    model = model_file(args.model, out)
    model.chmod(0o644)
    reports = {sandbox: run(model, sandbox, out / f"{args.model}-{sandbox}.json", args)
               for sandbox in args.sandboxes.split(",")}
    print(f"\n{args.model}, batch 1, CPU, {args.threads} threads\n")
    print(table(reports))


if __name__ == "__main__":
    main()
