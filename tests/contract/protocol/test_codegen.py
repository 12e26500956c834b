"""The committed generated code is exactly what scripts/gen_proto.sh produces from proto/ (CI fails on drift)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

GENERATED = ["runner_pb2.py", "runner_pb2.pyi", "runner_pb2_grpc.py"]


def test_regenerating_the_protocol_leaves_no_diff(tmp_path: Path):
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "proto", copy / "proto")
    (copy / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "gen_proto.sh", copy / "scripts" / "gen_proto.sh")
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(["bash", str(copy / "scripts" / "gen_proto.sh")], check=True, capture_output=True, env=env)
    package = Path("proto/speedster_run/runner/v1")
    for name in GENERATED:
        committed = (REPO / package / name).read_text()
        regenerated = (copy / package / name).read_text()
        assert regenerated == committed, f"{package / name} is stale: run scripts/gen_proto.sh and commit"
