#!/usr/bin/env bash
# Regenerates the runner protocol's Python code from proto/ with the pinned generator (grpcio-tools in pyproject's
# "dev" extra). CI runs it and fails when the committed code differs.
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto --grpc_python_out=proto \
  proto/speedster_run/runner/v1/runner.proto
