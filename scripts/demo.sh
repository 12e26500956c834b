#!/usr/bin/env bash
# Quick start: builds a ResNet-style CNN with random weights, saves it as a torch.export artifact, and lets
# speedster-run find the fastest way to run it on this CPU with ONNX Runtime, OpenVINO, torch, TVM and IREE candidates.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
mkdir -p demo
model=${MODEL:-resnet18}
[ -f "demo/$model.pt2" ] || speedster-run example-model "$model" "demo/$model.pt2"
speedster-run --model "demo/$model.pt2" --device cpu --metric-drop-ths 0.1 \
  --report demo/report.json --time-budget 3 "$@"
