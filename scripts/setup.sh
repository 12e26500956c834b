#!/usr/bin/env bash
# Creates .venv (once) and installs speedster-run with every CPU backend and the test tools.
# torch is pinned first so that the "torch" extra's range is already satisfied (no multi-GB CUDA download).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON_BIN=${PYTHON_BIN:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON_BIN" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.speedster-run-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
  python -m pip install -q -e ".[all,dev]"
  touch "$stamp"
fi
