#!/usr/bin/env bash
# Runs the whole test suite (real ONNX Runtime, OpenVINO, torch and gRPC) after setting up .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
python -m pytest -q -p no:cacheprovider "$@"
