"""Builds the run's sandbox from --sandbox (and --runner)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from orchestrator.config import SANDBOXES, RunConfig
from orchestrator.errors import UserError
from orchestrator.sandboxes.base import Sandbox

__all__ = ["SANDBOXES", "docker_options", "make_sandbox"]


def docker_options() -> dict:
    """DockerSandbox limits from the environment: SPEEDSTER_RUN_DOCKER_MEMORY (e.g. 16g), _TMPFS (size of the
    containers' /tmp, e.g. 4g), _PIDS (process/thread limit)."""
    options: dict = {}
    for variable, key, kind in (("SPEEDSTER_RUN_DOCKER_MEMORY", "mem_limit", str),
                                ("SPEEDSTER_RUN_DOCKER_TMPFS", "tmpfs_size", str),
                                ("SPEEDSTER_RUN_DOCKER_PIDS", "pids_limit", int)):
        value = os.environ.get(variable)
        if value:
            try:
                options[key] = kind(value)
            except ValueError:
                raise UserError(f"{variable}={value!r}: expected a number") from None
    return options


def make_sandbox(config: RunConfig, backends: Sequence[str] = ()) -> Sandbox:
    """The sandbox named by config.sandbox; a sandbox that cannot work here is a UserError, before anything starts.
    `backends` are those the run will start (the docker sandbox checks that those named in config.backends have
    their image)."""
    if config.sandbox == "docker":
        from orchestrator.sandboxes.base import SandboxError
        from orchestrator.sandboxes.docker import DockerSandbox

        sandbox = DockerSandbox(config.device, **docker_options())
        try:
            sandbox.engine()
            # Backends the user named must have their image; others without one become "unavailable" rows.
            sandbox.check([b for b in backends if b in (config.backends or ())])
        except SandboxError as error:
            raise UserError(str(error)) from None
        return sandbox
    if config.sandbox == "auto":
        from orchestrator.sandboxes.auto import AutoSandbox

        return AutoSandbox(config.device, docker_options())
    if config.sandbox == "local":
        from orchestrator.sandboxes.local import LocalSandbox

        return LocalSandbox()
    if config.sandbox == "remote":
        from orchestrator.sandboxes.remote import PROBE_TIMEOUT_S, RemoteSandbox, check_settings

        check_settings(config.runner_addresses, config.runner_security, backends, config.backends or ())
        sandbox = RemoteSandbox(config.runner_addresses, config.runner_security)
        for backend in backends:  # a wrong token is a UserError before anything starts (a runner down is a row)
            sandbox.check_token(backend, PROBE_TIMEOUT_S)
        return sandbox
    raise UserError(f"unknown sandbox {config.sandbox!r}; use one of {', '.join(SANDBOXES)}")
