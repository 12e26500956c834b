"""Device names as the orchestrator says them, mapped to what a runner sees where it runs.

A container given the host's GPU 2 sees it as its GPU 0. The sandbox that starts the runner says so in
SPEEDSTER_RUN_DEVICE_MAP ("cuda:2=cuda:0,gpu:2=gpu:0": outside=inside); the runner then describes its devices by
their outside names and compiles for the inside name, so that the orchestrator needs to know nothing about it.
"""

from __future__ import annotations

import os

ENV_VARIABLE = "SPEEDSTER_RUN_DEVICE_MAP"


def device_map(text: str | None = None) -> dict[str, str]:
    """outside -> inside, from `text` (default: the environment)."""
    text = os.environ.get(ENV_VARIABLE, "") if text is None else text
    pairs = (item.split("=", 1) for item in text.split(",") if "=" in item)
    return {outside.strip(): inside.strip() for outside, inside in pairs}


def map_for(device: str) -> str:
    """The map a sandbox sets for a runner that sees only `device`, as index 0 of its kind ("" when none is needed).
    Both accelerator spellings are mapped, since backends call the same GPU cuda:N or gpu:N."""
    kind, _, index = device.partition(":")
    if kind not in ("cuda", "gpu") or index in ("", "0"):
        return ""
    return f"cuda:{index}=cuda:0,gpu:{index}=gpu:0"


def inward(device: str, mapping: dict[str, str]) -> str:
    return mapping.get(device, device)


def outward(devices, mapping: dict[str, str]) -> list[str]:
    """The runner's devices under the orchestrator's names; a device with no outside name keeps its own."""
    back = {inside: outside for outside, inside in mapping.items()}
    return [back.get(device, device) for device in devices]


def device_kind(device: str) -> str:
    """"cuda:1" -> "cuda"."""
    return device.split(":", 1)[0]


def device_index(device: str) -> int:
    """"cuda:1" -> 1, "cpu" -> 0."""
    _, _, index = device.partition(":")
    return int(index) if index else 0
