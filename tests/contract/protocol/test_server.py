"""runners.server over real gRPC: health, Describe, chunked uploads of a model with external data, artifacts,
benchmarks, request serialisation, and the `python -m runners.server` command line."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import wait as futures_wait
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.runner_client import RunnerCallError, RunnerClient, wait_until_serving
from speedster_run.shared import tensors
from speedster_run.shared.files import send_files
from runners.server import RUNNER_WORKERS
from speedster_run.runner.v1 import CHUNK_BYTES, PROTOCOL_VERSION, SERVICE_NAME
from speedster_run.runner.v1 import runner_pb2 as pb
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc
from tests.contract.protocol import echo_backend
from tests.contract.protocol.support import REPO, TEST_BACKENDS, TIMEOUT_S
from tests.contract.protocol.models import BIG_IN, add_one_model, big_weights, external_data_model

FILES = ["model.onnx", "weights.bin"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def health_status(target: str, service: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=TIMEOUT_S).status


def assert_described(answer: pb.DescribeResponse) -> None:
    assert re.fullmatch(r"1\.\d+", answer.protocol_version) and answer.protocol_version == PROTOCOL_VERSION
    assert answer.backend == "onnxruntime"
    assert answer.available, answer.unavailable_reason
    assert answer.versions["onnxruntime"] == ort.__version__
    assert "cpu" in answer.devices
    assert ("fp32", "default") in {(o.precision, o.variant) for o in answer.offers}
    assert all("onnx" in o.formats and o.devices for o in answer.offers)
    host = dict(answer.host)
    assert {"cpu", "cpu_count", "cpus_allowed", "python", "platform", "hostname"} <= set(host)
    assert host["cpu"] and host["cpu_count"] == str(os.cpu_count())
    assert host["python"] == platform.python_version()


# -- health and Describe ------------------------------------------------------------------------------------------

def test_health_serving(ort_runner):
    for service in ("", SERVICE_NAME):
        assert health_status(ort_runner.target, service) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health_status(ort_runner.target, "no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert wait_until_serving(ort_runner.target, timeout_s=5)


def test_wait_until_serving_gives_up(tmp_path):
    began = time.monotonic()
    assert not wait_until_serving(f"unix://{tmp_path}/nobody.sock", timeout_s=0.3)
    assert time.monotonic() - began < 5


def test_describe(ort_runner):
    assert_described(ort_runner.client.describe(TIMEOUT_S))


def test_client_refuses_another_major_version(ort_runner, monkeypatch):
    monkeypatch.setattr("runners.servicer.PROTOCOL_VERSION", "2.0")
    with pytest.raises(RunnerCallError, match="protocol 2.0") as caught:
        ort_runner.client.describe(TIMEOUT_S)
    assert caught.value.kind == "protocol"
    monkeypatch.setattr("runners.servicer.PROTOCOL_VERSION", "1.99")  # a newer minor version is fine
    assert ort_runner.client.describe(TIMEOUT_S).protocol_version == "1.99"


# -- a model with external data, uploaded in chunks -------------------------------------------------------------

@pytest.fixture(scope="module")
def big(model_dir) -> Path:
    """model.onnx + weights.bin (6 MiB, several chunks) in their own directory."""
    path = external_data_model(model_dir / "big")
    assert (path.parent / "weights.bin").stat().st_size > 5 * CHUNK_BYTES
    assert path.stat().st_size < CHUNK_BYTES  # the weights really are external
    return path


@pytest.fixture(scope="module")
def x_big() -> np.ndarray:
    return np.random.default_rng(5).normal(0, 1, (3, BIG_IN)).astype(np.float32)


@pytest.fixture(scope="module")
def expected(big, x_big) -> np.ndarray:
    """ONNX Runtime run directly on the original files."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(big), sess_options=options, providers=["CPUExecutionProvider"])
    want = session.run(["y"], {"x": x_big})[0]
    np.testing.assert_allclose(want, x_big.astype(np.float64) @ big_weights() + np.linspace(-1, 1, 1000),
                               rtol=1e-4, atol=1e-4)
    return want


def load_ok(runner, source: pb.ModelSource, **fields) -> pb.LoadResponse:
    answer = runner.client.load(pb.LoadRequest(model=source, device="cpu", threads=1, **fields), TIMEOUT_S)
    assert answer.model_id, answer.failure
    return answer


def infer_y(runner, model_id: str, x: np.ndarray) -> np.ndarray:
    answer = runner.client.infer(model_id, {"x": x}, TIMEOUT_S)
    assert not answer.failure.category, answer.failure
    return tensors.set_from_proto(answer.outputs)["y"]


@pytest.fixture(scope="module")
def uploaded(ort_runner, big) -> pb.LoadResponse:
    upload_id = ort_runner.client.upload(big.parent, FILES, TIMEOUT_S)
    directory = ort_runner.servicer.uploads[upload_id]
    assert sorted(p.name for p in directory.iterdir()) == FILES
    for name in FILES:
        assert sha256(directory / name) == sha256(big.parent / name)
    source = pb.ModelSource(upload_id=upload_id, file_name="model.onnx", sha256=sha256(big), format="onnx")
    return load_ok(ort_runner, source)


def test_upload_answers_its_files(ort_runner, big):
    chunks = list(send_files(big.parent, FILES))
    assert len(chunks) > 6 and all(len(c.data) <= CHUNK_BYTES for c in chunks)
    answer = ort_runner.stub.UploadModel(iter(chunks), timeout=TIMEOUT_S)
    assert list(answer.files) == FILES and answer.upload_id in ort_runner.servicer.uploads


def test_uploaded_model_matches_onnxruntime(ort_runner, uploaded, x_big, expected):
    assert [(s.name, list(s.shape), list(s.dim_names)) for s in uploaded.inputs] == [("x", [-1, BIG_IN], ["batch", ""])]
    assert uploaded.compile_s > 0 and uploaded.details["providers"] == "CPUExecutionProvider"
    np.testing.assert_allclose(infer_y(ort_runner, uploaded.model_id, x_big), expected, rtol=1e-5, atol=1e-5)


def test_model_by_path_with_sha256(ort_runner, big, x_big, expected):
    answer = load_ok(ort_runner, pb.ModelSource(path=str(big), sha256=sha256(big), format="onnx"))
    np.testing.assert_allclose(infer_y(ort_runner, answer.model_id, x_big), expected, rtol=1e-5, atol=1e-5)
    ort_runner.client.unload(answer.model_id, TIMEOUT_S)
    assert answer.model_id not in ort_runner.servicer.models


def test_save_and_fetch_artifact(ort_runner, uploaded, big, x_big, expected, tmp_path):
    saved = ort_runner.client.save_artifact(uploaded.model_id, TIMEOUT_S)
    assert not saved.failure.category, saved.failure
    manifest = saved.manifest
    assert (manifest.backend, manifest.format, manifest.file_name) == ("onnxruntime", "onnx", "model.onnx")
    assert sorted(manifest.files) == FILES and manifest.options["artifact"] == "true"

    by_file: dict[str, list[pb.FileChunk]] = defaultdict(list)
    order = []
    for chunk in ort_runner.client.fetch_artifact(uploaded.model_id, TIMEOUT_S):
        if chunk.file_name not in by_file:
            order.append(chunk.file_name)
        by_file[chunk.file_name].append(chunk)
    assert order == list(manifest.files)  # one file after the other, in the manifest's order
    server_copy = ort_runner.servicer.models[uploaded.model_id].workdir / "artifact"
    for name, chunks in by_file.items():
        assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
        assert all(len(c.data) <= CHUNK_BYTES for c in chunks) and not any(c.sha256 for c in chunks[:-1])
        data = b"".join(c.data for c in chunks)
        digest = hashlib.sha256(data).hexdigest()
        assert digest == chunks[-1].sha256 == sha256(server_copy / name) == sha256(big.parent / name)
        (tmp_path / name).write_bytes(data)
    assert len(by_file["weights.bin"]) > 1

    # The fetched files rebuild the model (on a runner that shares no filesystem they would be uploaded back).
    reloaded = load_ok(ort_runner, pb.ModelSource(path=str(tmp_path / manifest.file_name), format=manifest.format),
                       precision=manifest.precision, variant=manifest.variant, options=manifest.options)
    assert reloaded.details["source"] == "artifact"
    np.testing.assert_allclose(infer_y(ort_runner, reloaded.model_id, x_big), expected, rtol=1e-5, atol=1e-5)
    ort_runner.client.unload(reloaded.model_id, TIMEOUT_S)


# -- Infer and Benchmark timing -----------------------------------------------------------------------------------

@pytest.fixture
def add_one(ort_runner, tmp_path) -> str:
    answer = load_ok(ort_runner, pb.ModelSource(path=str(add_one_model(tmp_path / "add_one.onnx")), format="onnx"))
    yield answer.model_id
    ort_runner.client.unload(answer.model_id, TIMEOUT_S)


PLAN = dict(warmup_iterations=2, min_iterations=10, max_iterations=40, max_time_s=0.5, window_iterations=5,
            stability_pct=50.0, stable_windows=2)
X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_benchmark_samples_and_first_inference(ort_runner, add_one):
    request = pb.BenchmarkRequest(model_id=add_one, inputs=tensors.set_to_proto({"x": X}), **PLAN)
    first = ort_runner.client.benchmark(request, TIMEOUT_S)
    assert not first.failure.category, first.failure
    assert 10 <= len(first.latencies_ns) <= 40 and len(first.latencies_ns) % 5 == 0
    assert all(ns > 0 for ns in first.latencies_ns)
    assert first.first_inference_s > 0
    assert first.clock == "monotonic_ns" and first.peak_rss_bytes > 0
    second = ort_runner.client.benchmark(request, TIMEOUT_S)
    assert second.first_inference_s == 0 and len(second.latencies_ns) >= 10
    assert not ort_runner.client.infer(add_one, {"x": X}, TIMEOUT_S).first_inference


def test_infer_marks_first_inference(ort_runner, add_one):
    first = ort_runner.client.infer(add_one, {"x": X}, TIMEOUT_S)
    second = ort_runner.client.infer(add_one, {"x": X}, TIMEOUT_S)
    assert first.first_inference and not second.first_inference
    assert first.latency_ns > 0 and second.latency_ns > 0
    np.testing.assert_array_equal(tensors.set_from_proto(second.outputs)["y"], X + 1)
    request = pb.BenchmarkRequest(model_id=add_one, inputs=tensors.set_to_proto({"x": X}), **PLAN)
    assert ort_runner.client.benchmark(request, TIMEOUT_S).first_inference_s == 0  # Infer already paid for it


def test_requests_are_serialised(echo_runner, tmp_path):
    """Two Infer calls sent at once both succeed, one after the other: the backend never runs two at a time."""
    placeholder = tmp_path / "model.bin"
    placeholder.write_bytes(b"x")
    model_id = load_ok(echo_runner, pb.ModelSource(path=str(placeholder)), variant="sleep").model_id
    # The module the runner imported through SPEEDSTER_RUN_BACKENDS, whatever name this test file imported it as.
    concurrency = sys.modules[type(echo_runner.servicer.backend).__module__]._Concurrency
    concurrency.most = 0
    barrier = threading.Barrier(2)
    answers: list = [None, None]

    def call(index: int) -> None:
        barrier.wait()
        answers[index] = echo_runner.client.infer(model_id, {"i": np.array(index)}, TIMEOUT_S)

    began = time.monotonic()
    threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    elapsed = time.monotonic() - began
    for index, answer in enumerate(answers):
        assert answer is not None and not answer.failure.category
        assert tensors.set_from_proto(answer.outputs)["i"] == index
    assert concurrency.most == 1
    assert elapsed >= 2 * echo_backend.SLEEP_S * 0.9


# -- the command line ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def runner_command(listen: str, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "runners.server", "--backend", "onnxruntime", "--listen", listen,
            "--workdir", str(workdir)]


def test_tcp_listen_subprocess(tmp_path):
    target = f"127.0.0.1:{free_port()}"
    log = tmp_path / "runner.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(runner_command(target, tmp_path), cwd=REPO, stdin=subprocess.DEVNULL,
                                   stdout=handle, stderr=handle)
    try:
        deadline = time.monotonic() + 30
        while not wait_until_serving(target, timeout_s=0.5):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
        assert catches(process.pid, signal.SIGTERM)  # SERVING means a SIGTERM now stops it cleanly
        for service in ("", SERVICE_NAME):
            assert health_status(target, service) == health_pb2.HealthCheckResponse.SERVING
        client = RunnerClient(target)
        try:
            assert_described(client.describe(TIMEOUT_S))
        finally:
            client.close()
        assert [p.name.startswith("runner-onnxruntime-") for p in tmp_path.iterdir() if p.is_dir()] == [True]
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0, log.read_text()
        assert time.monotonic() - began < 5
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert f"listening on {target}" in log.read_text()
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # the scratch directory went with the runner


_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine())


def _signal_masks(pid: int, tid: int | None = None) -> dict[str, int]:
    """SigBlk, SigIgn, SigCgt... of a process (or one of its threads) from /proc, as integers."""
    status = Path(f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return {key: int(fields[key], 16) for key in ("SigBlk", "SigIgn", "SigCgt")}


def catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler installed for sig."""
    return bool(_signal_masks(pid)["SigCgt"] & 1 << (sig - 1))


def _thread_accepts(pid: int, tid: int, sig: int) -> bool:
    """Whether thread tid of pid neither blocks nor ignores sig."""
    masks = _signal_masks(pid, tid)
    return not (masks["SigBlk"] | masks["SigIgn"]) & 1 << (sig - 1)


@pytest.mark.skipif(_SYS_TGKILL is None, reason="tgkill syscall number unknown on this machine")
def test_sigterm_to_any_thread_stops_the_runner(tmp_path):
    """The kernel may hand a process-directed SIGTERM to any thread, gRPC's included; the runner must still stop."""
    import ctypes

    target = f"unix://{tmp_path}/r.sock"
    process = subprocess.Popen(runner_command(target, tmp_path), cwd=REPO, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not wait_until_serving(target, timeout_s=0.5):
            assert process.poll() is None and time.monotonic() < deadline
        assert catches(process.pid, signal.SIGTERM)  # installed before the runner reports SERVING
        others = [int(t) for t in os.listdir(f"/proc/{process.pid}/task") if int(t) != process.pid]
        tid = next(t for t in others if _thread_accepts(process.pid, t, signal.SIGTERM))
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(_SYS_TGKILL, process.pid, tid, int(signal.SIGTERM)) == 0, ctypes.get_errno()
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize(
    "listen, message",
    [
        ("bogus", "expected unix:///path.sock or host:port"),
        ("127.0.0.1:99999", "port 0-65535"),  # gRPC would silently bind 99999 % 65536
        ("127.0.0.1:http", "expected unix:///path.sock or host:port"),
        ("unix:///no/such/directory/r.sock", "cannot listen on unix:///no/such/directory/r.sock"),
    ],
)
def test_bad_listen_exits_with_a_message(listen, message, tmp_path):
    done = subprocess.run(runner_command(listen, tmp_path), cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # no scratch directory left behind


# -- one caller at a time, answered at once; health on its own threads; work stops when its caller has gone -------

def echo_model(runner, tmp_path: Path, variant: str) -> str:
    placeholder = tmp_path / "model.bin"
    placeholder.write_bytes(b"x")
    return load_ok(runner, pb.ModelSource(path=str(placeholder)), variant=variant).model_id


def sleep_benchmark(model_id: str, max_time_s: float) -> pb.BenchmarkRequest:
    """A Benchmark of the "sleep" echo model that runs for max_time_s (SLEEP_S per run)."""
    return pb.BenchmarkRequest(model_id=model_id, inputs=tensors.set_to_proto({"x": X}), warmup_iterations=0,
                               min_iterations=100_000, max_iterations=100_000, max_time_s=max_time_s,
                               window_iterations=1, stable_windows=1)


def wait_idle(runner, timeout_s: float) -> float:
    """Seconds until the runner serves nothing (AssertionError past timeout_s)."""
    began = time.monotonic()
    while runner.servicer.serving is not None:
        assert time.monotonic() - began < timeout_s, f"still serving {runner.servicer.serving}"
        time.sleep(0.01)
    return time.monotonic() - began


def test_a_busy_runner_answers_a_second_caller_at_once(echo_runner, tmp_path):
    model_id = echo_model(echo_runner, tmp_path, "sleep")
    benchmark = echo_runner.stub.Benchmark.future(sleep_benchmark(model_id, max_time_s=2.0), timeout=TIMEOUT_S)
    try:
        while echo_runner.servicer.serving != "Benchmark":
            time.sleep(0.01)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            echo_runner.stub.Infer(pb.InferRequest(model_id=model_id, inputs=tensors.set_to_proto({"x": X})),
                                   timeout=TIMEOUT_S)
        assert time.monotonic() - began < 1.0  # at once, not at its deadline
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert re.fullmatch(r"busy: serving Benchmark since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(for \d+ s\)",
                            caught.value.details()), caught.value.details()
        assert health_status(echo_runner.target, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
        assert echo_runner.client.describe(TIMEOUT_S).backend == "echo"  # Describe touches no device: it answers
        # The orchestrator's client asks again within its deadline; past it, it says what the runner was serving.
        with pytest.raises(RunnerCallError) as busy:
            echo_runner.client.infer(model_id, {"x": X}, timeout_s=0.5)
        assert busy.value.kind == "busy" and busy.value.status == "RESOURCE_EXHAUSTED"
        assert str(busy.value).startswith("runner busy: serving Benchmark since ")
        assert "0.5 s deadline passed" in str(busy.value)
        waited = echo_runner.client.infer(model_id, {"x": X}, timeout_s=TIMEOUT_S)  # retried until the runner is free
        assert not waited.failure.category and benchmark.done()
        assert not benchmark.result().failure.category
    finally:
        benchmark.cancel()
        wait_idle(echo_runner, TIMEOUT_S)


def test_health_answers_while_the_runner_service_threads_are_all_taken(echo_runner):
    release = threading.Event()
    taken = [echo_runner.pool.submit(release.wait) for _ in range(RUNNER_WORKERS)]
    try:
        with pytest.raises(RunnerCallError, match="deadline"):
            echo_runner.client.describe(timeout_s=0.5)  # no RunnerService thread is free...
        began = time.monotonic()
        assert health_status(echo_runner.target, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - began < 1.0  # ...and health answers anyway, on its own threads
    finally:
        release.set()
        futures_wait(taken)
    assert echo_runner.client.describe(TIMEOUT_S).backend == "echo"


def test_a_benchmark_stops_when_its_caller_has_gone(echo_runner, tmp_path):
    """Past its deadline, nobody reads the answer: the measurement ends there, not after its 30 s budget."""
    model_id = echo_model(echo_runner, tmp_path, "sleep")
    with pytest.raises(RunnerCallError) as caught:
        echo_runner.client.benchmark(sleep_benchmark(model_id, max_time_s=30.0), timeout_s=0.5)
    assert caught.value.kind == "timeout"
    assert wait_idle(echo_runner, 5.0) < 2 * echo_backend.SLEEP_S + 1.0
    # Cancelled rather than timed out: the same.
    call = echo_runner.stub.Benchmark.future(sleep_benchmark(model_id, max_time_s=30.0), timeout=TIMEOUT_S)
    while echo_runner.servicer.serving != "Benchmark":
        time.sleep(0.01)
    call.cancel()
    assert wait_idle(echo_runner, 5.0) < 2 * echo_backend.SLEEP_S + 1.0
    echo_runner.client.unload(model_id, TIMEOUT_S)


def test_a_model_whose_caller_has_gone_is_not_kept(echo_runner, tmp_path):
    """Its caller never learns its id and could never unload it: the runner frees it when the compile ends."""
    placeholder = tmp_path / "model.bin"
    placeholder.write_bytes(b"x")
    models = set(echo_runner.servicer.models)
    with pytest.raises(RunnerCallError, match="deadline"):
        echo_runner.client.load(pb.LoadRequest(model=pb.ModelSource(path=str(placeholder)), variant="slow_load"),
                                timeout_s=0.3)
    wait_idle(echo_runner, echo_backend.SLOW_LOAD_S + 5)
    assert set(echo_runner.servicer.models) == models
    assert len(list((echo_runner.servicer.workdir / "models").iterdir())) == len(models)


def test_delete_upload_removes_its_files(echo_runner, tmp_path):
    (tmp_path / "model.bin").write_bytes(b"x" * 10)
    upload_id = echo_runner.client.upload(tmp_path, ["model.bin"], TIMEOUT_S)
    directory = echo_runner.servicer.uploads[upload_id]
    assert (directory / "model.bin").is_file()
    echo_runner.client.delete_upload(upload_id, TIMEOUT_S)
    assert not directory.exists() and upload_id not in echo_runner.servicer.uploads
    with pytest.raises(RunnerCallError, match="NOT_FOUND: unknown upload"):
        echo_runner.client.load(pb.LoadRequest(model=pb.ModelSource(upload_id=upload_id, file_name="model.bin")),
                                TIMEOUT_S)


def test_sigterm_ends_a_runner_whose_call_hangs(tmp_path):
    """A compile stuck for good: after the stop's grace period the runner removes its scratch directory and exits
    without waiting for the stuck thread (the interpreter would wait for it forever)."""
    target = f"unix://{tmp_path}/r.sock"
    env = dict(os.environ, SPEEDSTER_RUN_BACKENDS=TEST_BACKENDS,
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "proto")]))
    command = [sys.executable, "-m", "runners.server", "--backend", "echo", "--listen", target,
               "--workdir", str(tmp_path)]
    log = tmp_path / "runner.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle)
    try:
        deadline = time.monotonic() + 30
        while not wait_until_serving(target, timeout_s=0.5):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        (scratch,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        (tmp_path / "model.bin").write_bytes(b"x")
        with grpc.insecure_channel(target) as channel:
            request = pb.LoadRequest(model=pb.ModelSource(path=str(tmp_path / "model.bin")), variant="hang")
            hung = pb_grpc.RunnerServiceStub(channel).Load.future(request, timeout=TIMEOUT_S)  # its caller waits on
            time.sleep(0.5)
            began = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
            assert time.monotonic() - began < 5
            assert isinstance(hung.exception(timeout=TIMEOUT_S), grpc.RpcError)  # the stop ended the call
        assert not scratch.exists()
        assert "Load still running" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
