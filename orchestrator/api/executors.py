"""Where an optimized model runs: in this process when its backend's library is importable here, otherwise in the
backend's runner (its Docker image where one is built, else a local runner process). Both take and return dicts of
numpy arrays keyed by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.config import DEFAULT_SANDBOX
from orchestrator.loader import SavedModelError, load_saved
from runners import registry
from speedster_run.shared import tensors
from speedster_run.runner.v1 import runner_pb2 as pb

EXECUTIONS = ("auto", "in-process", "runner")


class InProcess:
    """The saved artifact compiled by the backend in this process (no gRPC on the hot path)."""

    def __init__(self, directory: Path, manifest: dict, device: str, threads: int | None):
        self.model = load_saved(directory, device=device, threads=threads)
        self.where = "in-process"

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.model(inputs)

    def close(self) -> None:
        self.model.close()


class InRunner:
    """The saved artifact loaded in the backend's runner, started in `sandbox` (auto: Docker when the image is
    built and an engine answers, else a local process); every call goes over the runner protocol."""

    def __init__(self, directory: Path, manifest: dict, device: str, threads: int | None,
                 sandbox: str = DEFAULT_SANDBOX, trust_model: bool = False):
        from orchestrator.config import RunConfig
        from orchestrator.pool import CallFailure, RunnerPool
        from orchestrator.sandboxes.factory import make_sandbox
        from orchestrator.trusted_torch import HOW, is_contained

        self.backend = backend = manifest["backend"]
        config = self.config = RunConfig(model=directory / manifest["file_name"], device=device, sandbox=sandbox,
                           threads=manifest.get("threads", 0) if threads is None else threads, trust_model=trust_model)
        self.pool = RunnerPool(make_sandbox(config, [backend]), config.effective_threads)
        sandbox_ = self.pool.sandbox
        contained = is_contained(sandbox_, backend)
        try:
            if trust_model and not contained:
                raise SavedModelError(f"{directory}: trust_model=True loads it only in a runner in a container or on "
                                      f"another host, and this {backend} runner would be a local process: {HOW}")
            names = sorted(manifest["files"])
            if sandbox_.shares_filesystem:
                sandbox_.share(directory, [directory / n for n in names])
                path = sandbox_.runner_path(backend, str((directory / manifest["file_name"]).resolve()))
                source = pb.ModelSource(path=path, format=manifest["format"],
                                        sha256=manifest["files"][manifest["file_name"]])
            else:
                upload = self.pool.call(backend, lambda c: c.upload(directory, names, config.call_timeout_s(backend)))
                source = pb.ModelSource(upload_id=upload, file_name=manifest["file_name"], format=manifest["format"],
                                        sha256=manifest["files"][manifest["file_name"]])
            request = pb.LoadRequest(model=source, device=device, precision=manifest["precision"],
                                     variant=manifest["variant"],
                                     options=manifest.get("options", {}) | config.load_options(backend, "", contained),
                                     threads=config.effective_threads)
            answer = self.pool.call(backend, lambda c: c.load(request, config.call_timeout_s(backend)))
            if answer.failure.category:
                raise SavedModelError(f"{directory}: the {backend} runner could not load it: {answer.failure.message}")
        except CallFailure as error:
            self.pool.close()
            raise SavedModelError(f"{directory}: the {backend} runner failed: {error}") from None
        except BaseException:
            self.pool.close()
            raise
        self.model_id = answer.model_id
        kind = sandbox_.placement(backend)[0]
        self.where = f"{backend} runner ({kind} sandbox)"

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from orchestrator.pool import CallFailure

        try:
            deadline_s = self.config.call_timeout_s(self.backend)
            answer = self.pool.call(self.backend, lambda c: c.infer(self.model_id, inputs, deadline_s))
        except CallFailure as error:
            raise RuntimeError(f"the {self.backend} runner failed: {error}") from None
        if answer.failure.category:
            raise RuntimeError(f"the {self.backend} runner failed: {answer.failure.message}")
        return tensors.set_from_proto(answer.outputs)

    def close(self) -> None:
        self.pool.close()


def importable_here(backend: str) -> str:
    """"" when the backend can run in this process, else why not."""
    try:
        availability = registry.load_backend(backend).probe()
    except registry.RegistryError as error:
        return str(error)
    return "" if availability.available else availability.reason


def open_executor(directory: Path, manifest: dict, device: str, threads: int | None, execution: str = "auto",
                  sandbox: str = DEFAULT_SANDBOX, trust_model: bool = False):
    """An executor for the saved artifact: in-process when possible (or asked), else through a runner; with
    `trust_model` always through a runner in a container (or on another host), which opens the artifact unchecked."""
    if execution not in EXECUTIONS:
        raise ValueError(f"execution={execution!r}; use one of {', '.join(EXECUTIONS)}")
    if trust_model and execution == "in-process":
        raise SavedModelError(f"{directory}: trust_model=True never opens the model in this process; use "
                              "execution='runner' (or 'auto')")
    if execution == "runner" or trust_model:
        return InRunner(directory, manifest, device, threads, sandbox, trust_model)
    reason = importable_here(manifest["backend"])
    if not reason:
        return InProcess(directory, manifest, device, threads)
    if execution == "in-process":
        raise SavedModelError(f"{directory}: backend {manifest['backend']} cannot run in this process: {reason}")
    try:
        return InRunner(directory, manifest, device, threads, sandbox)
    except Exception as error:
        raise SavedModelError(
            f"{directory}: backend {manifest['backend']} is neither importable here ({reason}) nor runnable in a "
            f"runner ({error}); install speedster-run[{manifest['backend']}] or build its image with "
            f"`speedster-run images build {manifest['backend']}` ({manifest.get('image', '')})") from None
