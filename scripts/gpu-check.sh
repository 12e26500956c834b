#!/usr/bin/env bash
# The whole GPU check in one command, for a bare GPU host (CUDA, PyTorch, onnx and ONNX Runtime's CPU build; Python
# 3.12; no Docker, no network, nothing of ours installed) that is lent for minutes:
#
#   scripts/gpu-check.sh --prepare        here, with network: the wheels the GPU host lacks, into .whl/ (about 8 MB)
#   scripts/gpu-check.sh OUT_DIR          there: speedster-run --device cuda:0 on resnet50 and BERT-base, the GPU tests
#   scripts/gpu-check.sh OUT_DIR --dry-run   here, on the CPU: the same steps on tiny models, to check the script
#
# OUT_DIR receives environment.txt, one report .json and .log per model, summary.md (the tables) and gpu-tests.log.
# Nothing is installed there beyond the carried wheels, which go to a private directory on PYTHONPATH; the project
# runs from this tree (python -m orchestrator.cli), runners as local processes.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
wheels=.whl

if [ "${1:-}" = --prepare ]; then
  # The versions installed here, which this tree's generated protocol code was made for: gRPC and protobuf refuse
  # older runtimes than the generator's, and the GPU host's may be older.
  ./scripts/setup.sh
  pins=$(.venv/bin/python -c 'from importlib.metadata import version as v
print(" ".join(f"{n}=={v(n)}" for n in ("grpcio", "grpcio-health-checking", "protobuf")))')
  mkdir -p "$wheels"
  # shellcheck disable=SC2086  # the pins are words
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$wheels" $pins
  du -sh "$wheels"
  exit 0
fi

out=${1:?usage: scripts/gpu-check.sh OUT_DIR [--dry-run] | --prepare}
mode=gpu
[ "${2:-}" = --dry-run ] && mode=dry
mkdir -p "$out"
if [ "$mode" = dry ]; then
  ./scripts/setup.sh
  python=.venv/bin/python
else
  python=${PYTHON:-python3}
  if compgen -G "$wheels/*.whl" >/dev/null; then
    site=$(mktemp -d /tmp/speedster-run-site-XXXXXX)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    export PYTHONPATH=$site
  fi
fi
export PYTHONPATH="$repo:$repo/proto${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$python" scripts/gpu_check.py "$out" --mode "$mode"
