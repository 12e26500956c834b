"""The orchestrator's side of the runner protocol: typed calls with deadlines, gRPC errors turned into exceptions."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from speedster_run.shared import tensors
from speedster_run.shared.errors import BUSY_PREFIX
from speedster_run.shared.files import send_files
from speedster_run.runner.v1 import GRPC_OPTIONS, PROTOCOL_VERSION, SERVICE_NAME
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc


# A busy runner (serving another caller) is asked again after these pauses, within the call's own deadline.
BUSY_FIRST_RETRY_S = 0.05
BUSY_MAX_RETRY_S = 1.0


class RunnerCallError(Exception):
    """A call did not complete: the runner died, hung past its deadline, was busy with another caller's call until
    the deadline, or rejected the request."""

    def __init__(self, kind: str, message: str, status: str = ""):
        super().__init__(message)
        self.kind = kind  # "timeout", "gone" (runner unreachable or died), "busy", "protocol"
        self.status = status  # the gRPC status code's name ("UNAUTHENTICATED"...), "" when none came back


class _CallDetails(collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
        grpc.ClientCallDetails):
    pass


class _TokenMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                     grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call of a plaintext channel (a loopback runner with a token);
    over TLS the token travels as call credentials instead, which gRPC refuses to send in plaintext."""

    def __init__(self, token: str):
        self._pair = ("authorization", f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._pair]
        return _CallDetails(details.method, details.timeout, metadata, details.credentials,
                            getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    intercept_unary_stream = intercept_unary_unary
    intercept_stream_unary = intercept_unary_unary
    intercept_stream_stream = intercept_unary_unary


def _read(path: str | os.PathLike | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def open_channel(target: str, options=(), tls_ca: str | os.PathLike | None = None, token: str | None = None,
                 server_name: str | None = None, tls_cert: str | os.PathLike | None = None,
                 tls_key: str | os.PathLike | None = None) -> grpc.Channel:
    """A channel to a runner: plaintext, or TLS trusting `tls_ca` (with a client certificate for mutual TLS), the
    token sent as `authorization: Bearer` metadata; `server_name` overrides the name checked in the certificate."""
    options = list(options)
    if tls_ca is None and tls_cert is None:
        channel = grpc.insecure_channel(target, options=options)
        return grpc.intercept_channel(channel, _TokenMetadata(token)) if token else channel
    credentials = grpc.ssl_channel_credentials(root_certificates=_read(tls_ca), private_key=_read(tls_key),
                                               certificate_chain=_read(tls_cert))
    if token:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)


def wait_until_serving(target: str, timeout_s: float, **security) -> bool:
    """True once the runner's grpc.health.v1 check answers SERVING within timeout_s; `security` as open_channel's."""
    channel = open_channel(target, **security)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout_s
        )
    except (grpc.FutureTimeoutError, grpc.RpcError):
        return False
    finally:
        channel.close()
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def _translate(error: grpc.RpcError) -> RunnerCallError:
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RunnerCallError("timeout", "the runner did not answer before the deadline", code.name)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return RunnerCallError("gone", f"the runner stopped answering: {error.details()}", code.name)
    return RunnerCallError("protocol", f"{code.name}: {error.details()}", code.name)


def _busy(error: grpc.RpcError) -> str | None:
    """What a busy runner is serving ("serving Load since ..."), None for any other error (a RESOURCE_EXHAUSTED of
    gRPC's own, a message over the size limit, says something else)."""
    details = error.details() or ""
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(BUSY_PREFIX):
        return details[len(BUSY_PREFIX):]
    return None


class _BusyRetry:
    """Asks a busy runner again, with a growing pause, until the call's own deadline; then says what it served."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.pause_s = BUSY_FIRST_RETRY_S

    def remaining_s(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def wait_or_raise(self, serving: str) -> None:
        """Sleeps before the next try; RunnerCallError("busy") when no time is left for one."""
        if self.remaining_s() <= self.pause_s:
            raise RunnerCallError("busy", f"runner busy: {serving}; still busy when this call's {self.timeout_s:g} s "
                                          f"deadline passed", grpc.StatusCode.RESOURCE_EXHAUSTED.name)
        time.sleep(self.pause_s)
        self.pause_s = min(self.pause_s * 2, BUSY_MAX_RETRY_S)


class RunnerClient:
    """One connection to one runner. Every call takes a deadline in seconds."""

    def __init__(self, target: str, tls_ca: str | os.PathLike | None = None, token: str | None = None,
                 server_name: str | None = None, tls_cert: str | os.PathLike | None = None,
                 tls_key: str | os.PathLike | None = None):
        self.target = target
        self._channel = open_channel(target, GRPC_OPTIONS, tls_ca=tls_ca, token=token, server_name=server_name,
                                     tls_cert=tls_cert, tls_key=tls_key)
        self._stub = pb_grpc.RunnerServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, timeout_s: float):
        """method(request) within timeout_s; `request` may be a function making it (a stream, made anew per try)."""
        retry = _BusyRetry(timeout_s)
        while True:
            try:
                return method(request() if callable(request) else request, timeout=retry.remaining_s())
            except grpc.RpcError as error:
                serving = _busy(error)
                if serving is None:
                    raise _translate(error) from None
            retry.wait_or_raise(serving)

    def describe(self, timeout_s: float = 60.0) -> pb.DescribeResponse:
        answer = self._call(self._stub.Describe, pb.DescribeRequest(), timeout_s)
        major = answer.protocol_version.split(".", 1)[0]
        if major != PROTOCOL_VERSION.split(".", 1)[0]:
            raise RunnerCallError(
                "protocol", f"runner speaks protocol {answer.protocol_version}, this orchestrator {PROTOCOL_VERSION}"
            )
        return answer

    def upload(self, directory: Path, names: list[str], timeout_s: float) -> str:
        """Streams model files to a runner that shares no filesystem; returns the upload id."""
        return self._call(self._stub.UploadModel, lambda: send_files(directory, names), timeout_s).upload_id

    def delete_upload(self, upload_id: str, timeout_s: float = 30.0) -> None:
        """Removes an upload's files from the runner (protocol 1.1)."""
        self._call(self._stub.DeleteUpload, pb.DeleteUploadRequest(upload_id=upload_id), timeout_s)

    def load(self, request: pb.LoadRequest, timeout_s: float) -> pb.LoadResponse:
        return self._call(self._stub.Load, request, timeout_s)

    def infer(self, model_id: str, inputs: dict, timeout_s: float) -> pb.InferResponse:
        request = pb.InferRequest(model_id=model_id, inputs=tensors.set_to_proto(inputs))
        return self._call(self._stub.Infer, request, timeout_s)

    def benchmark(self, request: pb.BenchmarkRequest, timeout_s: float) -> pb.BenchmarkResponse:
        return self._call(self._stub.Benchmark, request, timeout_s)

    def save_artifact(self, model_id: str, timeout_s: float, fmt: str = "",
                      example: pb.TensorSet | None = None) -> pb.SaveArtifactResponse:
        """The backend's own artifact, or with `fmt` ("onnx") the loaded model converted, traced with `example`."""
        request = pb.SaveArtifactRequest(model_id=model_id, format=fmt, example=example)
        return self._call(self._stub.SaveArtifact, request, timeout_s)

    def fetch_artifact(self, model_id: str, timeout_s: float) -> Iterator[pb.FileChunk]:
        retry = _BusyRetry(timeout_s)
        while True:
            received = False
            try:
                stream = self._stub.FetchArtifact(pb.FetchArtifactRequest(model_id=model_id),
                                                  timeout=retry.remaining_s())
                for chunk in stream:
                    received = True
                    yield chunk
                return
            except grpc.RpcError as error:
                serving = None if received else _busy(error)  # busy comes before the first chunk, or never
                if serving is None:
                    raise _translate(error) from None
            retry.wait_or_raise(serving)

    def unload(self, model_id: str, timeout_s: float = 30.0) -> None:
        self._call(self._stub.Unload, pb.UnloadRequest(model_id=model_id), timeout_s)
