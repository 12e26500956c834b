"""`from speedster import optimize_model, save_model, load_model`: Speedster's entry points, served by
speedster-run (see orchestrator/api)."""

from orchestrator.api import OptimizedModel, load_model, optimize_model, save_model

__all__ = ["optimize_model", "save_model", "load_model", "OptimizedModel"]
