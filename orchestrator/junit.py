"""`--junit FILE`: the run as a JUnit XML report, the format CI report viewers read.

One <testsuite> per run, one <testcase> per candidate. A candidate that could not take part (its backend is
unavailable or not applicable to the model or device) is <skipped>; one that failed (compile, runtime, accuracy,
timeout, crash, oom, export) is a <failure> whose type is the failure category; the winner and the verdict are
suite properties, and each measured candidate's latency line is its <system-out>. The layout follows the Ant JUnit
schema that Jenkins, GitLab and the GitHub test-report actions accept (a <properties> element first, a timestamp
without a time zone, a time on every testcase).
"""

from __future__ import annotations

import datetime
import platform
import xml.etree.ElementTree as ET
from pathlib import Path

from orchestrator.formatting import significant, speedup_text

# Categories meaning "did not take part" rather than "took part and failed".
SKIP_CATEGORIES = frozenset({"unavailable", "not applicable"})


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.3f}"


def _latency_line(candidate: dict) -> str:
    stats = candidate.get("stats") or {}
    if not stats:
        return ""
    line = f"median {significant(stats['median_ms'])} ms, p90 {significant(stats['p90_ms'])} ms over {stats['n']} runs"
    if candidate.get("speedup") is not None:
        line += f"; speedup {speedup_text(candidate)}"
    return line


def junit_xml(report: dict) -> str:
    """The report (RunReport.to_dict() or a loaded report.json) as JUnit XML text."""
    candidates = report.get("candidates", [])
    model = Path(str(report.get("source", {}).get("path", "model"))).name
    device = report.get("config", {}).get("device", "")
    failures = sum(1 for c in candidates if c.get("failure") and c["failure"]["category"] not in SKIP_CATEGORIES)
    skipped = sum(1 for c in candidates if c.get("failure") and c["failure"]["category"] in SKIP_CATEGORIES)
    suite = ET.Element("testsuite", {
        "name": f"speedster-run {model} on {device}",
        "timestamp": datetime.datetime.now().replace(microsecond=0).isoformat(),
        "hostname": platform.node() or "localhost",
        "tests": str(len(candidates)), "failures": str(failures), "errors": "0", "skipped": str(skipped),
        "time": _seconds(report.get("wall_s")),
    })
    properties = ET.SubElement(suite, "properties")
    for name, value in (("winner", report.get("winner") or ""), ("verdict", report.get("verdict", "")),
                        ("model_sha256", report.get("source", {}).get("sha256", "")), ("device", device)):
        ET.SubElement(properties, "property", {"name": name, "value": str(value)})
    classname = f"speedster-run.{device or 'device'}.{model}".replace(" ", "_")
    for candidate in candidates:
        case = ET.SubElement(suite, "testcase", {
            "name": candidate["name"] + (" (winner)" if candidate["name"] == report.get("winner") else ""),
            "classname": classname, "time": _seconds(candidate.get("compile_s"))})
        failure = candidate.get("failure")
        if failure and failure["category"] in SKIP_CATEGORIES:
            ET.SubElement(case, "skipped", {"message": f"{failure['category']}: {failure['message']}"})
        elif failure:
            element = ET.SubElement(case, "failure", {"type": failure["category"], "message": failure["message"]})
            element.text = "\n".join(part for part in (f"stage: {failure.get('stage', '')}", failure.get("detail", ""),
                                                       failure.get("runner_log", "")) if part)
        line = _latency_line(candidate)
        if line:
            ET.SubElement(case, "system-out").text = line
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def write_junit(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(report))
