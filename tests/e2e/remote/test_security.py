"""A runner on TCP with TLS and a token: who gets in, who does not, and what the server refuses to start with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.runner_client import RunnerCallError, RunnerClient, open_channel, wait_until_serving
from speedster_run.shared import security
from runners.server import ServerSecurity, check_security
from speedster_run.runner.v1 import GRPC_OPTIONS, SERVICE_NAME
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc
from tests.conftest import mlp_onnx
from tests.e2e.remote.support import REPO, TOKEN, RemoteRunner, free_port, runner_env


def raw_describe(channel) -> grpc.StatusCode:
    try:
        pb_grpc.RunnerServiceStub(channel).Describe(pb.DescribeRequest(), timeout=10)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# -- pure functions -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:1", True), ("127.3.2.1:1", True), ("localhost:1", True), ("[::1]:1", True), ("unix:///r.sock", True),
    ("0.0.0.0:1", False), ("[::]:1", False), ("10.0.0.5:1", False), ("runner.example.com:1", False), (":1", False),
])
def test_is_loopback(address, loopback):
    assert security.is_loopback(address) is loopback


def test_token_comes_from_the_file_then_the_environment(tmp_path):
    path = tmp_path / "t"
    path.write_text("  abc \n")
    assert security.read_token(path, {}) == "abc"
    assert security.read_token(None, {security.TOKEN_ENV: "xyz"}) == "xyz"
    assert security.read_token(None, {}) is None
    path.write_text("\n")
    with pytest.raises(security.SecurityConfigError, match="is empty"):
        security.read_token(path, {})
    assert security.token_matches([("authorization", "Bearer abc")], "abc")
    assert not security.token_matches([("authorization", "Bearer abd")], "abc")
    assert not security.token_matches([("authorization", "abc")], "abc")
    assert not security.token_matches([], "abc")


def test_server_settings_check(tmp_path):
    pem = tmp_path / "x.pem"
    protected = ServerSecurity(tls_cert=pem, tls_key=pem, token="t")
    check_security("0.0.0.0:50051", protected)
    check_security("127.0.0.1:50051", ServerSecurity())  # loopback: the host's users only
    check_security("unix:///tmp/r.sock", ServerSecurity())
    check_security("0.0.0.0:50051", ServerSecurity(insecure=True))
    for unprotected in (ServerSecurity(), ServerSecurity(token="t"), ServerSecurity(tls_cert=pem, tls_key=pem)):
        with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0:50051 without TLS and a token"):
            check_security("0.0.0.0:50051", unprotected)
    with pytest.raises(SystemExit, match="go together"):
        check_security("127.0.0.1:1", ServerSecurity(tls_cert=pem))
    with pytest.raises(SystemExit, match="must be a loopback"):
        check_security("127.0.0.1:1", ServerSecurity(health_listen="0.0.0.0:2"))


# -- the server refuses to expose itself ---------------------------------------------------------------------------
def test_server_refuses_a_public_address_without_tls_and_token_in_one_line(tmp_path):
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "runners.server", "--backend", "onnxruntime",
                             "--listen", f"0.0.0.0:{port}"], capture_output=True, text=True, timeout=60,
                            env=runner_env(SPEEDSTER_RUN_TOKEN=TOKEN), cwd=tmp_path)  # a token alone is not enough
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refusing to listen on 0.0.0.0" in lines[0] and "--insecure" in lines[0], result.stderr


def test_server_listens_on_a_public_address_with_insecure(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "runners.server", "--backend", "onnxruntime",
                                "--listen", f"0.0.0.0:{port}", "--insecure"], cwd=tmp_path, env=runner_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until_serving(f"127.0.0.1:{port}", 60)
    finally:
        process.terminate()
        process.wait(timeout=10)


# -- who gets in ---------------------------------------------------------------------------------------------------
def test_calls_without_or_with_a_wrong_token_are_unauthenticated(tls_runner, pki):
    with open_channel(tls_runner.address, tls_ca=pki.ca) as channel:
        assert raw_describe(channel) == grpc.StatusCode.UNAUTHENTICATED
        # Client-streaming too: the upload is refused before a byte is stored.
        chunks = iter([pb.FileChunk(file_name="m.onnx", data=b"x" * 10, last=True)])
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.RunnerServiceStub(channel).UploadModel(chunks, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with open_channel(tls_runner.address, tls_ca=pki.ca, token="wrong-token") as channel:
        assert raw_describe(channel) == grpc.StatusCode.UNAUTHENTICATED
    with open_channel(tls_runner.address, tls_ca=pki.ca, token=TOKEN + "x") as channel:
        assert raw_describe(channel) == grpc.StatusCode.UNAUTHENTICATED
    assert not list(tls_runner.scratch().glob("uploads/*/*"))
    client = RunnerClient(tls_runner.address, tls_ca=pki.ca)
    with pytest.raises(RunnerCallError, match="UNAUTHENTICATED"):
        client.describe(timeout_s=10)
    client.close()


def test_health_is_open_without_a_token(tls_runner, pki):
    with open_channel(tls_runner.address, tls_ca=pki.ca) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                           timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_token_and_ca_give_describe_streamed_load_and_infer(tls_runner, pki, tmp_path):
    model = mlp_onnx(tmp_path / "mlp.onnx", inputs=8, outputs=4)
    client = RunnerClient(tls_runner.address, tls_ca=pki.ca, token=TOKEN)
    try:
        answer = client.describe(timeout_s=30)
        assert answer.backend == "onnxruntime" and answer.available
        upload_id = client.upload(model.parent, [model.name], timeout_s=30)
        assert (tls_runner.scratch() / "uploads" / upload_id / "mlp.onnx").read_bytes() == model.read_bytes()
        loaded = client.load(pb.LoadRequest(model=pb.ModelSource(upload_id=upload_id, file_name=model.name,
                                                                 format="onnx"),
                                            device="cpu", precision="fp32", variant="default", threads=1),
                             timeout_s=60)
        assert loaded.model_id, loaded.failure
        x = np.ones((2, 8), np.float32)
        result = client.infer(loaded.model_id, {"x": x}, timeout_s=30)
        assert not result.HasField("failure") or not result.failure.category
        client.unload(loaded.model_id)
    finally:
        client.close()


def test_a_tcp_runner_loads_uploaded_models_only(tls_runner, pki, tmp_path):
    """A path would open any file of the runner's host for a caller on another host: PERMISSION_DENIED."""
    model = mlp_onnx(tmp_path / "mlp.onnx", inputs=8, outputs=4)
    client = RunnerClient(tls_runner.address, tls_ca=pki.ca, token=TOKEN)
    try:
        request = pb.LoadRequest(model=pb.ModelSource(path=str(model), format="onnx"), device="cpu", threads=1)
        with pytest.raises(RunnerCallError) as caught:
            client.load(request, timeout_s=30)
        assert caught.value.status == "PERMISSION_DENIED"
        assert "listens on TCP: it loads uploaded models only" in str(caught.value)
        upload_id = client.upload(model.parent, [model.name], timeout_s=30)  # the way that works
        source = pb.ModelSource(upload_id=upload_id, file_name=model.name, format="onnx")
        loaded = client.load(pb.LoadRequest(model=source, device="cpu", threads=1), timeout_s=60)
        assert loaded.model_id, loaded.failure
        client.unload(loaded.model_id)
        client.delete_upload(upload_id)
    finally:
        client.close()


def test_the_certificate_name_can_be_overridden(tls_runner, pki):
    # runner.test is in the certificate but not in the address: the override makes the check pass.
    assert wait_until_serving(tls_runner.address, 10, tls_ca=pki.ca, server_name="runner.test")
    assert not wait_until_serving(tls_runner.address, 2, tls_ca=pki.ca, server_name="elsewhere.test")


def test_plaintext_or_an_untrusted_ca_cannot_talk_to_a_tls_port(tls_runner, pki):
    assert not wait_until_serving(tls_runner.address, 2)
    with grpc.insecure_channel(tls_runner.address) as channel:
        assert raw_describe(channel) == grpc.StatusCode.UNAVAILABLE
    assert not wait_until_serving(tls_runner.address, 2, tls_ca=pki.other_ca)


def test_mutual_tls_requires_a_client_certificate(pki, token_file, tmp_path):
    runner = RemoteRunner("onnxruntime", tmp_path, "--tls-cert", str(pki.server_cert), "--tls-key",
                          str(pki.server_key), "--tls-client-ca", str(pki.ca), "--token-file", str(token_file))
    try:
        runner.wait_serving(tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key)
        assert not wait_until_serving(runner.address, 2, tls_ca=pki.ca)  # no client certificate: no handshake
        client = RunnerClient(runner.address, tls_ca=pki.ca, token=TOKEN, tls_cert=pki.client_cert,
                              tls_key=pki.client_key)
        assert client.describe(timeout_s=30).available
        client.close()
    finally:
        runner.stop()


def test_a_loopback_runner_can_require_a_token_without_tls(tmp_path):
    runner = RemoteRunner("onnxruntime", tmp_path, env=runner_env(SPEEDSTER_RUN_TOKEN=TOKEN))  # env token, TCP
    try:
        runner.wait_serving()
        with open_channel(runner.address) as channel:
            assert raw_describe(channel) == grpc.StatusCode.UNAUTHENTICATED
        with open_channel(runner.address, token=TOKEN) as channel:  # sent as metadata: no call credentials in clear
            assert raw_describe(channel) == grpc.StatusCode.OK
    finally:
        runner.stop()


def test_the_environment_token_does_not_apply_to_unix_sockets(tmp_path, monkeypatch):
    """Local-sandbox runners inherit the orchestrator's environment: a token meant for remote runners stays there."""
    from orchestrator.sandboxes.local import LocalSandbox

    monkeypatch.setenv("SPEEDSTER_RUN_TOKEN", TOKEN)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    sandbox = LocalSandbox(workdir=tmp_path)
    try:
        runner = sandbox.start("onnxruntime", threads=1, ready_timeout_s=60)
        client = RunnerClient(runner.target)
        assert client.describe(timeout_s=30).available
        client.close()
    finally:
        sandbox.close()


# -- what an unauthenticated peer costs the runner -----------------------------------------------------------------
def peak_rss_mib(pid: int) -> float:
    """VmHWM, the process's peak resident memory so far, from /proc (kB there)."""
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


UNAUTHENTICATED_INFER_MIB = 200
UNAUTHENTICATED_GROWTH_LIMIT_MIB = 32  # the request is refused before its body is read: nowhere near its size


def test_an_unauthenticated_request_is_refused_before_its_body_is_read(pki, token_file, tmp_path):
    """A 200 MiB Infer without the token: UNAUTHENTICATED, and the runner never buffers (or decodes) the message."""
    runner = RemoteRunner("onnxruntime", tmp_path, "--tls-cert", str(pki.server_cert), "--tls-key",
                          str(pki.server_key), "--token-file", str(token_file))
    try:
        runner.wait_serving(tls_ca=pki.ca)
        before = peak_rss_mib(runner.process.pid)
        tensor = pb.Tensor(name="x", dtype=pb.DATA_TYPE_UINT8, shape=[UNAUTHENTICATED_INFER_MIB << 20],
                           data=bytes(UNAUTHENTICATED_INFER_MIB << 20))
        request = pb.InferRequest(model_id="m", inputs=pb.TensorSet(tensors=[tensor]))
        with open_channel(runner.address, options=GRPC_OPTIONS, tls_ca=pki.ca, token="wrong-token") as channel:
            with pytest.raises(grpc.RpcError) as caught:
                pb_grpc.RunnerServiceStub(channel).Infer(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
        del request, tensor
        runner.wait_serving(timeout_s=10, tls_ca=pki.ca)  # still serving after the refusal
        after = peak_rss_mib(runner.process.pid)
        print(f"runner peak memory around a {UNAUTHENTICATED_INFER_MIB} MiB unauthenticated Infer: "
              f"{before:.0f} MiB -> {after:.0f} MiB")
        assert after - before < UNAUTHENTICATED_GROWTH_LIMIT_MIB, (before, after)
    finally:
        runner.stop()
