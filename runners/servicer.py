"""The runner's gRPC servicer: one backend's candidates compiled, run, measured and saved, one request at a time."""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import platform
import resource
import shutil
import threading
import time
import traceback
import uuid
from pathlib import Path

from runners import registry
from runners.backends.base import Availability, Backend, LoadedModel, LoadSpec
from speedster_run.shared import devices, tensors
from speedster_run.shared.errors import (
    BUSY_PREFIX,
    CallerGoneError,
    ChecksumMismatchError,
    InvalidRequestError,
    ModelFileMissingError,
    PathSourceRefusedError,
    ProtocolError,
    RunnerBusyError,
    UnknownModelError,
    as_candidate_error,
    failure,
    status_code,
)
from speedster_run.shared.files import receive_files, safe_relative, send_files, sha256_file
from speedster_run.shared.measure import TimingPlan, measure
from speedster_run.runner.v1 import PROTOCOL_VERSION
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc

log = logging.getLogger("runners.servicer")

class _Model:
    """A loaded candidate and what the runner remembers about it."""

    def __init__(self, loaded: LoadedModel, workdir: Path):
        self.loaded = loaded
        self.workdir = workdir
        self.first_inference_s = 0.0
        self.has_run = False
        self.artifact_files: list[str] = []


def peak_rss_bytes() -> int:
    """Peak resident memory of this runner process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def host_facts() -> dict[str, str]:
    """What the report needs to know about the machine the runner measures on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": str(os.cpu_count()),
        "cpus_allowed": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def probe_backend(name: str) -> tuple[Backend | None, Availability]:
    """Instantiates and probes a backend; any failure becomes an "unavailable" answer, never a crash (a probe that
    raises is answered by Backend.availability)."""
    try:
        backend = registry.load_backend(name)
    except Exception as error:  # a broken plugin or import is reported, not raised
        return None, Availability(available=False, reason=f"backend {name!r} failed to import: {error}")
    return backend, backend.availability()


def caller_waiting(context) -> bool:
    """False once the caller has gone: it cancelled, or its deadline passed (no one will read the answer)."""
    remaining = context.time_remaining()
    return context.is_active() and (remaining is None or remaining > 0)


def _handled(method):
    """Protocol errors answer with their status code (errors.py); anything else is a runner bug: INTERNAL, as
    errors.py documents (gRPC's default would be UNKNOWN)."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ProtocolError as error:
            context.abort(status_code(error), str(error))
        except Exception as error:
            log.exception("%s failed", method.__name__)
            context.abort(status_code(error), f"{type(error).__name__}: {error}")

    return wrapper


def _serialized(method):
    """One request at a time: compiles and benchmarks must never overlap on the runner's device. A call that comes
    while another is served is answered at once (RunnerBusyError), never queued: a queued call would hold one of the
    server's threads until its own deadline, saying nothing."""

    @functools.wraps(method)
    def exclusive(self, request, context):
        with self.exclusive(method.__name__):
            return method(self, request, context)

    return _handled(exclusive)


class RunnerServicer(pb_grpc.RunnerServiceServicer):
    def __init__(self, backend_name: str, workdir: Path, accept_paths: bool = True):
        self._lock = threading.Lock()
        self._serving: tuple[str, float] | None = None  # the call being served and when it began (time.time())
        self.backend_name = backend_name
        self.workdir = workdir
        # False for a runner on TCP: its callers are on other hosts, and a path would open any file of this one.
        self.accept_paths = accept_paths
        self.backend, self.availability = probe_backend(backend_name)
        self.models: dict[str, _Model] = {}
        self.uploads: dict[str, Path] = {}
        self._digests: dict[tuple[str, int, int], str] = {}
        self.device_map = devices.device_map()  # the orchestrator's device names -> this runner's

    @contextlib.contextmanager
    def exclusive(self, call: str):
        """Holds the runner for `call`; RunnerBusyError, naming what it serves, when another call holds it."""
        if not self._lock.acquire(blocking=False):
            raise RunnerBusyError(self._busy_message())
        self._serving = (call, time.time())
        try:
            yield
        finally:
            self._serving = None
            self._lock.release()

    @property
    def serving(self) -> str | None:
        """The name of the call being served, None when idle."""
        serving = self._serving
        return serving[0] if serving else None

    def _busy_message(self) -> str:
        serving = self._serving
        if serving is None:  # it ended between the failed acquire and now
            return f"{BUSY_PREFIX}serving another call"
        call, began = serving
        since = datetime.datetime.fromtimestamp(began, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{BUSY_PREFIX}serving {call} since {since} (for {time.time() - began:.0f} s)"

    # -- description ------------------------------------------------------------------------------------------
    @_handled  # not serialized: it touches no device, and a caller of a busy runner must still learn what it is
    def Describe(self, request, context):
        avail = self.availability
        return pb.DescribeResponse(
            protocol_version=PROTOCOL_VERSION,
            backend=self.backend_name,
            available=avail.available,
            unavailable_reason=avail.reason,
            versions=avail.versions,
            devices=devices.outward(avail.devices, self.device_map),
            offers=[
                pb.Offer(
                    precision=o.precision,
                    variant=o.variant,
                    devices=list(o.devices),
                    formats=list(o.formats),
                    description=o.description,
                )
                for o in avail.offers
            ],
            host=host_facts(),
        )

    # -- model files --------------------------------------------------------------------------------------------
    @_serialized
    def UploadModel(self, request_iterator, context):
        upload_id = uuid.uuid4().hex[:12]
        directory = self.workdir / "uploads" / upload_id
        directory.mkdir(parents=True)
        try:
            files = receive_files(request_iterator, directory)
        except BaseException:  # a bad chunk, or a caller gone mid-stream: nothing half-written stays
            shutil.rmtree(directory, ignore_errors=True)
            raise
        self.uploads[upload_id] = directory
        log.info("upload %s: %d files", upload_id, len(files))
        return pb.UploadModelResponse(upload_id=upload_id, files=files)

    @_serialized
    def DeleteUpload(self, request, context):
        directory = self.uploads.pop(request.upload_id, None)
        if directory is None:
            raise UnknownModelError(f"unknown upload {request.upload_id!r}")
        shutil.rmtree(directory, ignore_errors=True)  # models loaded from it keep what they loaded
        log.info("upload %s deleted", request.upload_id)
        return pb.DeleteUploadResponse()

    def _model_path(self, source: pb.ModelSource) -> Path:
        which = source.WhichOneof("location")
        if which == "path":
            if not self.accept_paths:
                raise PathSourceRefusedError("this runner listens on TCP: it loads uploaded models only "
                                             "(UploadModel, then ModelSource.upload_id), never a path on its host")
            path = Path(source.path)
        elif which == "upload_id":
            if source.upload_id not in self.uploads:
                raise UnknownModelError(f"unknown upload {source.upload_id!r}")
            if not source.file_name:
                raise InvalidRequestError("a model given by upload_id needs file_name")
            path = self.uploads[source.upload_id] / safe_relative(source.file_name)
        else:
            raise InvalidRequestError("ModelSource needs a path or an upload_id")
        if not path.is_file():
            raise ModelFileMissingError(f"model file {path} is not visible to this runner")
        if source.sha256:
            stat = path.stat()
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            if key not in self._digests:  # hashing a multi-GB file once per run is enough
                self._digests[key] = sha256_file(path)
            if self._digests[key] != source.sha256:
                raise ChecksumMismatchError(f"{path}: sha256 differs from the orchestrator's copy")
        return path

    # -- candidate lifecycle ------------------------------------------------------------------------------------
    @_serialized
    def Load(self, request, context):
        if not self.availability.available or self.backend is None:
            return pb.LoadResponse(failure=failure("unavailable", self.availability.reason))
        path = self._model_path(request.model)
        try:
            calibration = [tensors.set_from_proto(s) for s in request.calibration]
        except tensors.TensorFormatError as error:
            raise InvalidRequestError(str(error)) from None
        model_id = uuid.uuid4().hex[:12]
        workdir = self.workdir / "models" / model_id
        workdir.mkdir(parents=True)
        spec = LoadSpec(
            model_path=path,
            format=request.model.format,
            device=devices.inward(request.device or "cpu", self.device_map),
            precision=request.precision or "fp32",
            variant=request.variant or "default",
            options=dict(request.options),
            threads=request.threads,
            calibration=calibration,
            workdir=workdir,
        )
        started = time.perf_counter()
        try:
            loaded = self.backend.load(spec)
        except Exception as error:
            shutil.rmtree(workdir, ignore_errors=True)
            return pb.LoadResponse(failure=_candidate_failure(error, "compile"), peak_rss_bytes=peak_rss_bytes())
        compile_s = time.perf_counter() - started
        if not caller_waiting(context):  # no one will learn its id, so no one could unload it: free it now
            loaded.close()
            shutil.rmtree(workdir, ignore_errors=True)
            raise CallerGoneError("the caller went away while the model compiled; unloaded")
        try:
            inputs = [_spec_to_proto(t) for t in loaded.inputs]
            outputs = [_spec_to_proto(t) for t in loaded.outputs]
        except tensors.TensorFormatError as error:  # a string input, say: the protocol cannot carry it
            loaded.close()
            shutil.rmtree(workdir, ignore_errors=True)
            return pb.LoadResponse(failure=failure("unavailable", str(error)), peak_rss_bytes=peak_rss_bytes())
        self.models[model_id] = _Model(loaded, workdir)
        return pb.LoadResponse(
            model_id=model_id,
            compile_s=compile_s,
            inputs=inputs,
            outputs=outputs,
            details={k: str(v) for k, v in loaded.details.items()},
            peak_rss_bytes=peak_rss_bytes(),
        )

    def _model(self, model_id: str) -> _Model:
        if model_id not in self.models:
            raise UnknownModelError(f"unknown model id {model_id!r}")
        return self.models[model_id]

    def _run_first(self, model: _Model, feeds) -> tuple[dict, int]:
        """Runs once, remembering the first inference's latency (lazy initialisation shows up there)."""
        begin = time.perf_counter_ns()
        outputs = model.loaded.run(feeds)
        latency_ns = time.perf_counter_ns() - begin
        if not model.has_run:
            model.has_run = True
            model.first_inference_s = latency_ns / 1e9
        return outputs, latency_ns

    @_serialized
    def Infer(self, request, context):
        model = self._model(request.model_id)
        feeds = _decode_inputs(request.inputs)
        first = not model.has_run
        try:
            outputs, latency_ns = self._run_first(model, feeds)
            encoded = tensors.set_to_proto(outputs)
        except Exception as error:
            return pb.InferResponse(failure=_candidate_failure(error, "runtime"))
        return pb.InferResponse(outputs=encoded, latency_ns=latency_ns, first_inference=first)

    @_serialized
    def Benchmark(self, request, context):
        model = self._model(request.model_id)
        feeds = _decode_inputs(request.inputs)
        plan = TimingPlan.from_request(request)
        first_s = 0.0
        try:
            if not model.has_run:
                self._run_first(model, feeds)
                first_s = model.first_inference_s
            timing = measure(lambda: model.loaded.run(feeds), plan, stop=lambda: not caller_waiting(context))
        except Exception as error:
            return pb.BenchmarkResponse(failure=_candidate_failure(error, "runtime"))
        if timing.stopped:
            raise CallerGoneError("the caller went away (cancelled or past its deadline): measurement stopped")
        return pb.BenchmarkResponse(
            latencies_ns=timing.latencies_ns,
            stable=timing.stable,
            first_inference_s=first_s,
            peak_rss_bytes=peak_rss_bytes(),
            clock="monotonic_ns",
        )

    @_serialized
    def SaveArtifact(self, request, context):
        model = self._model(request.model_id)
        directory = model.workdir / "artifact"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        try:
            if request.format:  # a conversion of the loaded model (the torch backend: "onnx")
                artifact = model.loaded.export(directory, request.format, _decode_inputs(request.example))
            else:
                artifact = model.loaded.save(directory)
        except ProtocolError:
            raise
        except Exception as error:
            return pb.SaveArtifactResponse(failure=_candidate_failure(error, "runtime"))
        model.artifact_files = list(artifact.files)
        return pb.SaveArtifactResponse(
            manifest=pb.ArtifactManifest(
                backend=self.backend_name,
                format=artifact.format,
                file_name=artifact.file_name,
                precision=artifact.precision,
                variant=artifact.variant,
                options=artifact.options,
                files=list(artifact.files),
            )
        )

    def FetchArtifact(self, request, context):
        try:
            # Streamed while the runner is held, so that an Unload cannot remove files mid-stream; one chunk in
            # memory at a time. A caller that goes away closes this generator, which releases the runner.
            with self.exclusive("FetchArtifact"):
                model = self._model(request.model_id)
                if not model.artifact_files:
                    raise InvalidRequestError("call SaveArtifact before FetchArtifact")
                yield from send_files(model.workdir / "artifact", model.artifact_files)
        except ProtocolError as error:
            context.abort(status_code(error), str(error))

    @_serialized
    def Unload(self, request, context):
        model = self.models.pop(request.model_id, None)
        if model is None:
            raise UnknownModelError(f"unknown model id {request.model_id!r}")
        try:
            model.loaded.close()
        finally:
            shutil.rmtree(model.workdir, ignore_errors=True)
        return pb.UnloadResponse()


def _spec_to_proto(info) -> pb.TensorSpec:
    return pb.TensorSpec(
        name=info.name,
        dtype=tensors.dtype_code(info.dtype),
        shape=[-1 if d is None else int(d) for d in info.shape],
        dim_names=list(info.dim_names),
    )


def _decode_inputs(tensor_set: pb.TensorSet) -> dict:
    try:
        return tensors.set_from_proto(tensor_set)
    except tensors.TensorFormatError as error:
        raise InvalidRequestError(str(error)) from None


def _candidate_failure(error: Exception, default_category: str) -> pb.Failure:
    """Anything a backend raised, as an in-band failure: categorised as the backend base does (as_candidate_error),
    for backends that override load or run themselves, and for errors outside them (encoding the outputs)."""
    candidate = as_candidate_error(error, default_category)
    return failure(candidate.category, candidate.message,
                   candidate.detail or "".join(traceback.format_exception(error)))
