"""--trust-model: a torch file opened only by the torch runner in a container (or on another host), never here.

Without it, this process opens torch files itself, through the checks of proto/speedster_run/shared/export_archive.py, which
refuse anything in the file that would run code. With it, the file may hold anything torch can load (pickled objects,
guard code...), so only a runner whose damage stays in its container or on its host opens it: that runner reads the
model's inputs and outputs (Load) and exports it to ONNX (SaveArtifact with format "onnx", fetched with
FetchArtifact). The trust travels to a runner as a load option, and only to such runners (CandidateDriver.load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from orchestrator import model_source
from orchestrator.config import RunConfig
from orchestrator.errors import UserError
from orchestrator.sandboxes.base import Sandbox
from speedster_run.shared.types import TensorInfo
from speedster_run.shared.files import sha256_file

BACKEND = "torch"
CONTAINED = ("docker", "remote")  # placements whose runner does not run as a process of this machine's user
HOW = ("build the torch image (`speedster-run images build torch`) and run with --sandbox docker (or auto), or give "
       "a torch runner on another host with --runner torch=ADDR")


def is_contained(sandbox: Sandbox, backend: str) -> bool:
    return sandbox.placement(backend)[0] in CONTAINED


def open_model(config: RunConfig, progress: Callable[[str], None]) -> model_source.SourceModel:
    """The model's signature as the torch runner reads it (an ONNX file, which runs nothing, is read here)."""
    from orchestrator.pool import CallFailure, RunnerPool
    from orchestrator.sandboxes.factory import make_sandbox
    from orchestrator.torch_artifacts import TorchArtifactError, apply_overrides

    path = config.model
    fmt = model_source.model_format(path)
    if fmt == model_source.ONNX:
        return model_source.open_model(path, config.input_shapes)
    sandbox = make_sandbox(config, [BACKEND])
    kind, note = sandbox.placement(BACKEND)
    if kind not in CONTAINED:
        sandbox.close()
        raise UserError(f"--trust-model opens {path.name} only in a torch runner in a container or on another host, "
                        f"and this run's is a local process ({note or kind}): {HOW}")
    pool = RunnerPool(sandbox, config.effective_threads)
    try:
        progress(f"--trust-model: opening {path.name} in the torch runner ({kind}{': ' + note if note else ''})")
        resolved = path.resolve()
        sandbox.share(resolved.parent, [resolved])
        sha256 = sha256_file(path)
        try:
            model_id, answer = _load(pool, config, resolved, fmt, sha256, _zeros(config))
            pool.call(BACKEND, lambda c: c.unload(model_id))
        except CallFailure as error:
            raise UserError(f"--trust-model: the torch runner failed ({error}); {HOW}") from None
    finally:
        pool.close()
    inputs, outputs = [_tensor_info(s) for s in answer.inputs], [_tensor_info(s) for s in answer.outputs]
    try:
        inputs = apply_overrides(path.name, inputs, config.input_shapes)
    except TorchArtifactError as error:
        raise UserError(str(error)) from None
    return model_source.SourceModel(path=path, format=fmt, sha256=sha256, inputs=inputs, outputs=outputs)


def exporter(pool, config: RunConfig, sha256: str):
    """An export_onnx (orchestrator/torch_artifacts.py) that has the run's torch runner export the model."""
    from orchestrator.artifacts import write_chunks
    from orchestrator.pool import CallFailure
    from orchestrator.torch_artifacts import TorchExportError, check_onnx_export
    from speedster_run.shared import tensors

    def export(path: Path, fmt: str, inputs: list[TensorInfo], example: dict[str, np.ndarray], out_path: Path):
        if not is_contained(pool.sandbox, BACKEND):
            raise TorchExportError(f"{path.name}: not exported: this run's torch runner is not in a container")
        example_set = tensors.set_to_proto({i.name: example[i.name] for i in inputs})
        try:
            model_id, _ = _load(pool, config, path.resolve(), fmt, sha256, [example])
            deadline_s = config.call_timeout_s(BACKEND)
            answer = pool.call(BACKEND, lambda c: c.save_artifact(model_id, deadline_s, "onnx", example_set))
            if answer.failure.category:
                raise TorchExportError(f"{path.name}: the torch runner's ONNX export failed: {answer.failure.message}")
            out_path.parent.mkdir(parents=True, exist_ok=True)
            pool.call(BACKEND, lambda c: write_chunks(c.fetch_artifact(model_id, deadline_s), out_path.parent))
            pool.call(BACKEND, lambda c: c.unload(model_id))
        except (CallFailure, UserError) as error:
            raise TorchExportError(f"{path.name}: the torch runner's ONNX export failed: {error}") from None
        return check_onnx_export(path, out_path.parent / answer.manifest.file_name)

    return export


def _load(pool, config: RunConfig, path: Path, fmt: str, sha256: str, calibration: list[dict[str, np.ndarray]]):
    """(model_id, LoadResponse) of the original, fp32 eager on the CPU, loaded with trust by the torch runner."""
    from orchestrator.pool import CallFailure
    from speedster_run.shared import tensors
    from speedster_run.runner.v1 import runner_pb2 as pb

    sandbox = pool.sandbox
    if sandbox.shares_filesystem:
        source = pb.ModelSource(path=sandbox.runner_path(BACKEND, str(path)), sha256=sha256, format=fmt)
    else:
        upload_id = pool.call(BACKEND, lambda c: c.upload(path.parent, [path.name], config.call_timeout_s(BACKEND)))
        source = pb.ModelSource(upload_id=upload_id, file_name=path.name, sha256=sha256, format=fmt)
    request = pb.LoadRequest(model=source, device="cpu", precision="fp32", variant="eager",
                             options=config.load_options(BACKEND, "eager", contained=True),
                             threads=config.effective_threads,
                             calibration=[tensors.set_to_proto(s) for s in calibration])
    answer = pool.call(BACKEND, lambda c: c.load(request, config.call_timeout_s(BACKEND)))
    if answer.failure.category:
        raise UserError(f"{path.name}: the torch runner could not open it: {answer.failure.message}")
    if not answer.model_id:
        raise CallFailure("runtime", "the torch runner answered Load without a model id")
    return answer.model_id, answer


def _zeros(config: RunConfig) -> list[dict[str, np.ndarray]]:
    """For a TorchScript file without stored specs: inputs of the --input-shape sizes, from which the runner learns
    them (as the orchestrator does when it opens the file itself)."""
    if not config.input_shapes:
        return []
    return [{name: np.zeros(shape, dtype or "float32") for name, (shape, dtype) in config.input_shapes.items()}]


def _tensor_info(spec) -> TensorInfo:
    from speedster_run.shared import tensors

    return TensorInfo(spec.name, tensors.DTYPE_NAMES[spec.dtype], tuple(None if d < 0 else int(d) for d in spec.shape),
                      tuple(spec.dim_names))
