"""The Python API with Speedster's interface; import it as `from speedster import optimize_model, save_model,
load_model`."""

from __future__ import annotations

from pathlib import Path

from orchestrator.api.optimize import optimize_model
from orchestrator.api.optimized_model import OptimizedModel, load
from orchestrator.config import DEFAULT_SANDBOX


def save_model(optimized_model: OptimizedModel, path: str | Path) -> Path:
    """Writes the optimized model to a new (or empty) directory."""
    return optimized_model.save(path)


def load_model(path: str | Path, device: str | None = None, execution: str = "auto",
               sandbox: str = DEFAULT_SANDBOX, trust_model: bool = False) -> OptimizedModel:
    """Loads a model written by save_model: in this process when its backend is installed here, otherwise through
    the backend's runner (its image where one is built); a clear error when neither is possible. A torch artifact
    that holds more than weights and a graph is refused unless `trust_model`, which opens it only in the torch
    runner's container (or a runner on another host)."""
    return load(path, device=device, execution=execution, sandbox=sandbox, trust_model=trust_model)


__all__ = ["optimize_model", "save_model", "load_model", "OptimizedModel"]
