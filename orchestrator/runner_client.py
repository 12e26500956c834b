"""The orchestrator's side of the runner protocol: typed calls with deadlines, gRPC errors turned into exceptions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runners import tensors
from runners.files import send_files
from speedster_run.runner.v1 import GRPC_OPTIONS, PROTOCOL_VERSION, SERVICE_NAME
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc


class RunnerCallError(Exception):
    """A call did not complete: the runner died, hung past its deadline, or rejected the request."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind  # "timeout", "gone" (runner unreachable or died), "protocol"


def wait_until_serving(target: str, timeout_s: float) -> bool:
    """True once the runner's grpc.health.v1 check answers SERVING within timeout_s."""
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=timeout_s
            )
        except (grpc.FutureTimeoutError, grpc.RpcError):
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def _translate(error: grpc.RpcError) -> RunnerCallError:
    code = error.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return RunnerCallError("timeout", "the runner did not answer before the deadline")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return RunnerCallError("gone", f"the runner stopped answering: {error.details()}")
    return RunnerCallError("protocol", f"{code.name}: {error.details()}")


class RunnerClient:
    """One connection to one runner. Every call takes a deadline in seconds."""

    def __init__(self, target: str):
        self.target = target
        self._channel = grpc.insecure_channel(target, options=GRPC_OPTIONS)
        self._stub = pb_grpc.RunnerServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def _call(self, method, request, timeout_s: float):
        try:
            return method(request, timeout=timeout_s)
        except grpc.RpcError as error:
            raise _translate(error) from None

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
        chunks: Iterator[pb.FileChunk] = send_files(directory, names)
        return self._call(self._stub.UploadModel, chunks, timeout_s).upload_id

    def load(self, request: pb.LoadRequest, timeout_s: float) -> pb.LoadResponse:
        return self._call(self._stub.Load, request, timeout_s)

    def infer(self, model_id: str, inputs: dict, timeout_s: float) -> pb.InferResponse:
        request = pb.InferRequest(model_id=model_id, inputs=tensors.set_to_proto(inputs))
        return self._call(self._stub.Infer, request, timeout_s)

    def benchmark(self, request: pb.BenchmarkRequest, timeout_s: float) -> pb.BenchmarkResponse:
        return self._call(self._stub.Benchmark, request, timeout_s)

    def save_artifact(self, model_id: str, timeout_s: float) -> pb.SaveArtifactResponse:
        return self._call(self._stub.SaveArtifact, pb.SaveArtifactRequest(model_id=model_id), timeout_s)

    def fetch_artifact(self, model_id: str, timeout_s: float) -> Iterator[pb.FileChunk]:
        try:
            yield from self._stub.FetchArtifact(pb.FetchArtifactRequest(model_id=model_id), timeout=timeout_s)
        except grpc.RpcError as error:
            raise _translate(error) from None

    def unload(self, model_id: str, timeout_s: float = 30.0) -> None:
        self._call(self._stub.Unload, pb.UnloadRequest(model_id=model_id), timeout_s)
