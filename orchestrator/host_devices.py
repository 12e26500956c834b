"""Is the run's device on this host? Asked before any runner starts, so that `--device cuda` on a machine without a
GPU is a user error naming what was looked for, not a run where every backend reports "not seen"."""

from __future__ import annotations

import glob

from orchestrator.errors import UserError

# Device kind -> (what it is, the device nodes its driver creates for chip N).
_NODES = {
    "cuda": ("NVIDIA GPU", ("/dev/nvidia{index}",)),
    "gpu": ("NVIDIA GPU", ("/dev/nvidia{index}",)),
    "tpu": ("TPU", ("/dev/accel{index}", "/dev/vfio/[0-9]*")),
    "neuron": ("AWS Neuron device", ("/dev/neuron{index}",)),
}


def check_present(device: str) -> None:
    """UserError unless the device's node exists here ("cpu" always does)."""
    kind, _, index = device.partition(":")
    if kind not in _NODES:
        return
    what, patterns = _NODES[kind]
    looked = [pattern.format(index=index or 0) for pattern in patterns]
    if any(glob.glob(path) for path in looked):
        return
    present = sorted({path for pattern in patterns for path in glob.glob(pattern.format(index="[0-9]*"))})
    seen = f"; this host has {', '.join(present)}" if present else ""
    raise UserError(f"--device {device}: no {what} {index or 0} on this host (looked for {' and '.join(looked)}"
                    f"{seen}); use --device cpu, or --runner NAME=ADDR for runners on a host that has one")
