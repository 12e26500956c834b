"""The CI example pipelines only use what speedster-run has: every option of every `speedster-run` command line in
.ci/examples/*.yml exists in the parser of that command, so an example cannot rot when an option is renamed."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest
import yaml

from orchestrator import cli, compare_command, images_command

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / ".ci" / "examples").glob("*.yml"))


def _long_options(parser) -> set[str]:
    options = {o for action in parser._actions for o in action.option_strings}
    for action in parser._actions:  # subcommands (images build/list/pull...)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options |= _long_options(sub)
    return options


PARSERS = {"compare": compare_command.parser, "images": images_command.parser}


def _commands(text: str) -> list[list[str]]:
    """Each speedster-run command line in a shell script (continuation lines joined), as words."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        match = re.search(r"(?:^|\s|/)speedster-run(\s.*)", line)
        if match:
            words = shlex.split(match.group(1).split("|")[0], comments=True)
            found.append(words)
    return found


def _run_steps(workflow: dict) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_option_an_example_uses_exists(example):
    commands = [words for run in _run_steps(yaml.safe_load(example.read_text())) for words in _commands(run)]
    assert any(words and words[0].startswith("--model") for words in commands), "no optimize run in the example"
    for words in commands:
        parser = PARSERS[words[0]]() if words and words[0] in PARSERS else cli.run_parser()
        known = _long_options(parser)
        used = {w.split("=")[0] for w in words if w.startswith("--")}
        assert used <= known, f"{example.name}: speedster-run {' '.join(words)}: unknown {sorted(used - known)}"


def test_the_gpu_pipeline_gates_and_publishes():
    text = (REPO / ".ci" / "examples" / "gpu-pipeline.yml").read_text()
    for fragment in ("--junit junit.xml", '--summary-md "$GITHUB_STEP_SUMMARY"', "speedster-run compare baseline/",
                     "--max-regression", "report_paths: junit.xml"):
        assert fragment in text
