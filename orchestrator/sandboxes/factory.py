"""Builds the run's sandbox from --sandbox (and --runner)."""

from __future__ import annotations

from orchestrator.config import RunConfig
from orchestrator.errors import UserError
from orchestrator.sandboxes.base import Sandbox

SANDBOXES = ("local", "docker", "remote", "auto")


def make_sandbox(config: RunConfig) -> Sandbox:
    """The sandbox named by config.sandbox; a sandbox that cannot work here is a UserError, before anything starts."""
    if config.sandbox == "local":
        from orchestrator.sandboxes.local import LocalSandbox

        return LocalSandbox()
    raise UserError(f"unknown sandbox {config.sandbox!r}; use one of {', '.join(SANDBOXES)}")
