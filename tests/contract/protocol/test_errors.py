"""speedster_run.shared.errors against a live runner: every STATUS_CODES row as the status code a real call gets, and candidate
failures (compile errors, out of memory, unavailable backends) in-band in the answer."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from orchestrator.runner_client import RunnerCallError
from speedster_run.shared import tensors
from speedster_run.shared.errors import (CATEGORIES, STATUS_CODES, CallerGoneError, CandidateError, ChecksumMismatchError,
                            InvalidRequestError, ModelFileMissingError, PathSourceRefusedError, RunnerBusyError,
                            UnknownModelError, failure, status_code)
from runners.servicer import RunnerServicer
from speedster_run.runner.v1 import runner_pb2 as pb
from tests.contract.protocol.support import TIMEOUT_S, live_runner
from tests.contract.protocol.models import add_one_model, string_model

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@dataclasses.dataclass(frozen=True)
class World:
    """What the cases need: a live fake runner, a loaded model and the model file on disk."""

    runner: object
    model_id: str
    path: Path
    sha256: str


@pytest.fixture(scope="module")
def world(fake_runner, model_dir) -> World:
    path = add_one_model(model_dir / "add_one.onnx")
    answer = fake_runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(path), format="onnx"), variant="ok"),
                                   timeout=TIMEOUT_S)
    assert answer.model_id, answer.failure
    return World(fake_runner, answer.model_id, path, hashlib.sha256(path.read_bytes()).hexdigest())


def good_inputs() -> pb.TensorSet:
    return tensors.set_to_proto({"x": X})


def bad_bytes() -> pb.TensorSet:
    return pb.TensorSet(tensors=[pb.Tensor(name="x", dtype=pb.DATA_TYPE_FLOAT32, shape=[2, 4], data=bytes(31))])


def infer_raw(w: World, *raw: pb.Tensor) -> pb.InferResponse:
    return w.runner.stub.Infer(pb.InferRequest(model_id=w.model_id, inputs=pb.TensorSet(tensors=raw)),
                               timeout=TIMEOUT_S)


def load(w: World, **source) -> pb.LoadResponse:
    return w.runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(format="onnx", **source), variant="ok"),
                              timeout=TIMEOUT_S)


def chunks(*items: tuple[str, bytes, bool, str]) -> Iterator[pb.FileChunk]:
    for name, data, last, digest in items:
        yield pb.FileChunk(file_name=name, data=data, last=last, sha256=digest)


def upload(w: World, *items) -> pb.UploadModelResponse:
    return w.runner.stub.UploadModel(chunks(*items), timeout=TIMEOUT_S)


def fetch(w: World, model_id: str) -> list[pb.FileChunk]:
    return list(w.runner.stub.FetchArtifact(pb.FetchArtifactRequest(model_id=model_id), timeout=TIMEOUT_S))


def fresh_model(w: World) -> str:
    """A newly loaded model that has not saved an artifact yet."""
    answer = load(w, path=str(w.path))
    assert answer.model_id, answer.failure
    return answer.model_id


def while_busy(w: World, call: Callable[[World], object]):
    """call(w) while the runner serves another call (held here as a Benchmark would hold it)."""
    with w.runner.servicer.exclusive("Benchmark"):
        return call(w)


def load_path_over_tcp(w: World) -> pb.LoadResponse:
    """A path-based Load to a runner set up as a TCP runner is (accept_paths=False)."""
    with live_runner("fake", accept_paths=False) as tcp_like:
        return tcp_like.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(w.path), format="onnx"),
                                                 variant="ok"), timeout=TIMEOUT_S)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[World], object]
    code: grpc.StatusCode
    details: str  # a fragment the status details must contain


NOT_FOUND, INVALID, DATA_LOSS, PRECONDITION = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT,
                                               grpc.StatusCode.DATA_LOSS, grpc.StatusCode.FAILED_PRECONDITION)
BUSY, DENIED = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED
BOGUS = "no-such-model"
CASES = [
    # UnknownModelError -> NOT_FOUND
    Case("infer_unknown_model", lambda w: w.runner.stub.Infer(
        pb.InferRequest(model_id=BOGUS, inputs=good_inputs()), timeout=TIMEOUT_S), NOT_FOUND, BOGUS),
    Case("benchmark_unknown_model", lambda w: w.runner.stub.Benchmark(
        pb.BenchmarkRequest(model_id=BOGUS, inputs=good_inputs()), timeout=TIMEOUT_S), NOT_FOUND, BOGUS),
    Case("unload_unknown_model", lambda w: w.runner.stub.Unload(
        pb.UnloadRequest(model_id=BOGUS), timeout=TIMEOUT_S), NOT_FOUND, BOGUS),
    Case("save_artifact_unknown_model", lambda w: w.runner.stub.SaveArtifact(
        pb.SaveArtifactRequest(model_id=BOGUS), timeout=TIMEOUT_S), NOT_FOUND, BOGUS),
    Case("fetch_artifact_unknown_model", lambda w: fetch(w, BOGUS), NOT_FOUND, BOGUS),
    Case("load_unknown_upload", lambda w: load(w, upload_id="nope", file_name="m.onnx"), NOT_FOUND, "nope"),
    Case("delete_unknown_upload", lambda w: w.runner.stub.DeleteUpload(
        pb.DeleteUploadRequest(upload_id="nope"), timeout=TIMEOUT_S), NOT_FOUND, "nope"),
    # InvalidRequestError -> INVALID_ARGUMENT
    Case("infer_bad_tensor_bytes", lambda w: w.runner.stub.Infer(
        pb.InferRequest(model_id=w.model_id, inputs=bad_bytes()), timeout=TIMEOUT_S), INVALID, "31 bytes"),
    Case("infer_unknown_dtype", lambda w: infer_raw(w, pb.Tensor(name="x", dtype=77, shape=[1], data=b"0000")),
         INVALID, "77"),
    Case("infer_duplicate_input", lambda w: infer_raw(w, *good_inputs().tensors, *good_inputs().tensors),
         INVALID, "twice"),
    Case("infer_wrapping_shape", lambda w: infer_raw(w, pb.Tensor(name="x", dtype=1, shape=[2**32, 2**32], data=b"")),
         INVALID, "bytes"),
    Case("benchmark_bad_tensor_bytes", lambda w: w.runner.stub.Benchmark(
        pb.BenchmarkRequest(model_id=w.model_id, inputs=bad_bytes()), timeout=TIMEOUT_S), INVALID, "31 bytes"),
    Case("load_bad_calibration_bytes", lambda w: w.runner.stub.Load(pb.LoadRequest(
        model=pb.ModelSource(path=str(w.path), format="onnx"), calibration=[bad_bytes()]), timeout=TIMEOUT_S),
        INVALID, "31 bytes"),
    Case("load_source_without_location", lambda w: load(w, sha256=w.sha256), INVALID, "path or an upload_id"),
    Case("load_upload_without_file_name", lambda w: load(
        w, upload_id=upload(w, ("m.onnx", w.path.read_bytes(), True, w.sha256)).upload_id), INVALID, "file_name"),
    Case("load_upload_file_name_escapes", lambda w: load(
        w, upload_id=upload(w, ("m.onnx", w.path.read_bytes(), True, "")).upload_id, file_name="../add_one.onnx"),
        INVALID, "inside"),
    Case("load_upload_absolute_file_name", lambda w: load(
        w, upload_id=upload(w, ("m.onnx", w.path.read_bytes(), True, "")).upload_id, file_name=str(w.path)),
        INVALID, "inside"),
    Case("fetch_before_save", lambda w: fetch(w, fresh_model(w)), INVALID, "SaveArtifact"),
    Case("upload_dot_dot_name", lambda w: upload(w, ("../evil.onnx", b"x", True, "")), INVALID, "inside"),
    Case("upload_nested_dot_dot_name", lambda w: upload(w, ("a/../../evil", b"x", True, "")), INVALID, "inside"),
    Case("upload_absolute_name", lambda w: upload(w, ("/tmp/evil.onnx", b"x", True, "")), INVALID, "inside"),
    Case("upload_empty_name", lambda w: upload(w, ("", b"x", True, "")), INVALID, "relative"),
    Case("upload_without_last_chunk", lambda w: upload(w, ("m.onnx", b"x", False, "")), INVALID, "last chunk"),
    Case("upload_switches_file_mid_file", lambda w: upload(
        w, ("a.onnx", b"x", False, ""), ("b.bin", b"y", True, "")), INVALID, "last chunk"),
    # ChecksumMismatchError -> DATA_LOSS
    Case("load_sha256_mismatch", lambda w: load(w, path=str(w.path), sha256="0" * 64), DATA_LOSS, "sha256"),
    Case("upload_last_chunk_sha256_mismatch", lambda w: upload(
        w, ("m.onnx", b"abc", False, ""), ("m.onnx", b"def", True, hashlib.sha256(b"abc").hexdigest())),
        DATA_LOSS, "sha256"),
    # ModelFileMissingError -> FAILED_PRECONDITION
    Case("load_missing_path", lambda w: load(w, path=str(w.path.with_name("missing.onnx"))), PRECONDITION, "missing"),
    Case("load_directory_path", lambda w: load(w, path=str(w.path.parent)), PRECONDITION, "not visible"),
    Case("load_upload_missing_file", lambda w: load(
        w, upload_id=upload(w, ("m.onnx", b"x", True, "")).upload_id, file_name="other.onnx"),
        PRECONDITION, "other.onnx"),
    # RunnerBusyError -> RESOURCE_EXHAUSTED, at once, for every serialized call
    Case("infer_while_busy", lambda w: while_busy(w, lambda w: w.runner.stub.Infer(
        pb.InferRequest(model_id=w.model_id, inputs=good_inputs()), timeout=TIMEOUT_S)), BUSY,
        "busy: serving Benchmark since "),
    Case("load_while_busy", lambda w: while_busy(w, lambda w: load(w, path=str(w.path))), BUSY, "busy: serving"),
    Case("upload_while_busy", lambda w: while_busy(w, lambda w: upload(w, ("m.onnx", b"x", True, ""))), BUSY,
         "busy: serving"),
    Case("fetch_while_busy", lambda w: while_busy(w, lambda w: fetch(w, w.model_id)), BUSY, "busy: serving"),
    # PathSourceRefusedError -> PERMISSION_DENIED (a runner on TCP)
    Case("load_path_over_tcp", load_path_over_tcp, DENIED, "uploaded models only"),
]


def run_case(case: Case, w: World) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        case.call(w)
    return caught.value


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_status_code(case, world):
    error = run_case(case, world)
    assert error.code() == case.code, error.details()
    assert case.details in error.details()
    # A protocol error leaves the runner and the loaded model working.
    answer = world.runner.stub.Infer(pb.InferRequest(model_id=world.model_id, inputs=good_inputs()),
                                     timeout=TIMEOUT_S)
    np.testing.assert_array_equal(tensors.set_from_proto(answer.outputs)["y"], X + 1)


def test_every_table_row_is_hit(world):
    """The cases above reach every status code of the table, each through its own exception type."""
    hit = {run_case(case, world).code() for case in CASES}
    # CANCELLED answers a caller that has gone: no client sees it (test_server.py checks that the work stops).
    assert hit == set(STATUS_CODES.values()) - {grpc.StatusCode.CANCELLED}
    assert STATUS_CODES == {UnknownModelError: grpc.StatusCode.NOT_FOUND,
                            InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
                            ChecksumMismatchError: grpc.StatusCode.DATA_LOSS,
                            ModelFileMissingError: grpc.StatusCode.FAILED_PRECONDITION,
                            RunnerBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
                            PathSourceRefusedError: grpc.StatusCode.PERMISSION_DENIED,
                            CallerGoneError: grpc.StatusCode.CANCELLED}
    for error_type, code in STATUS_CODES.items():
        assert status_code(error_type("x")) == code
    assert status_code(RuntimeError("x")) == grpc.StatusCode.INTERNAL


def test_failed_upload_leaves_nothing_behind(world):
    uploads = world.runner.servicer.workdir / "uploads"
    before = set(uploads.iterdir()) if uploads.exists() else set()
    run_case(CASES[[c.name for c in CASES].index("upload_last_chunk_sha256_mismatch")], world)
    run_case(CASES[[c.name for c in CASES].index("upload_dot_dot_name")], world)
    assert set(uploads.iterdir()) == before
    assert not (uploads.parent / "evil.onnx").exists()


def test_runner_bug_is_internal(world, monkeypatch):
    """Anything but a ProtocolError escaping a handler is INTERNAL (errors.py), not gRPC's default UNKNOWN."""
    model_id = fresh_model(world)
    loaded = world.runner.servicer.models[model_id].loaded
    monkeypatch.setattr(loaded, "close", lambda: (_ for _ in ()).throw(KeyError("library state")))
    with pytest.raises(grpc.RpcError) as caught:
        world.runner.stub.Unload(pb.UnloadRequest(model_id=model_id), timeout=TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "KeyError" in caught.value.details()
    assert model_id not in world.runner.servicer.models


def test_client_turns_status_into_protocol_error(world):
    with pytest.raises(RunnerCallError) as caught:
        world.runner.client.infer(BOGUS, {"x": X}, TIMEOUT_S)
    assert caught.value.kind == "protocol"
    assert str(caught.value).startswith("NOT_FOUND:")


# -- in-band candidate failures ---------------------------------------------------------------------------------------

def test_compile_failure_is_in_band(world):
    answer = world.runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(world.path), format="onnx"),
                                                   variant="fail_compile"), timeout=TIMEOUT_S)
    assert not answer.model_id
    assert answer.failure.category == pb.FAILURE_CATEGORY_COMPILE
    assert answer.failure.message == "fake compiler rejected the model"
    assert answer.failure.detail == "fake detail"


def test_memory_error_is_oom(world):
    answer = world.runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(world.path), format="onnx"),
                                                   variant="oom"), timeout=TIMEOUT_S)
    assert not answer.model_id
    assert answer.failure.category == pb.FAILURE_CATEGORY_OOM
    assert answer.failure.message == "MemoryError: fake allocation of 1 TiB failed"
    assert "Traceback" in answer.failure.detail
    assert answer.peak_rss_bytes > 0


def test_failed_load_keeps_no_model(world):
    models = set(world.runner.servicer.models)
    world.runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(world.path)), variant="fail_compile"),
                           timeout=TIMEOUT_S)
    assert set(world.runner.servicer.models) == models
    assert len(list((world.runner.servicer.workdir / "models").iterdir())) == len(models)


def test_unrunnable_model_on_onnxruntime(ort_runner, model_dir):
    """Real ONNX Runtime: a garbage file fails to compile, a format it cannot run is unavailable, in-band."""
    garbage = model_dir / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    answer = ort_runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(garbage), format="onnx")),
                                  timeout=TIMEOUT_S)
    assert answer.failure.category == pb.FAILURE_CATEGORY_COMPILE and answer.failure.message
    answer = ort_runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(garbage), format="torchscript")),
                                  timeout=TIMEOUT_S)
    assert answer.failure.category == pb.FAILURE_CATEGORY_UNAVAILABLE


def test_model_with_string_input_is_unavailable_in_band(ort_runner, model_dir):
    """ORT loads it, but the protocol has no string dtype: an in-band failure and no model left behind."""
    path = string_model(model_dir / "strings.onnx")
    answer = ort_runner.stub.Load(pb.LoadRequest(model=pb.ModelSource(path=str(path), format="onnx")),
                                  timeout=TIMEOUT_S)
    assert not answer.model_id
    assert answer.failure.category == pb.FAILURE_CATEGORY_UNAVAILABLE
    assert "string" in answer.failure.message
    assert not ort_runner.servicer.models


@pytest.mark.parametrize(
    "backend, env, reason",
    [
        ("broken", {"SPEEDSTER_RUN_BACKENDS": "broken=no.such.module:X"}, "backend 'broken' failed to import"),
        ("bad_probe", {}, "probe failed: RuntimeError: driver mismatch"),
        ("not_registered", {}, "unknown backend 'not_registered'"),
    ],
)
def test_unavailable_backend(backend, env, reason, model_dir):
    with live_runner(backend, **env) as runner:
        described = runner.client.describe(TIMEOUT_S)
        assert described.backend == backend
        assert not described.available
        assert reason in described.unavailable_reason
        if backend == "broken":
            assert "No module named 'no'" in described.unavailable_reason  # the import error itself
        assert not described.offers
        path = add_one_model(model_dir / f"{backend}.onnx")
        answer = runner.client.load(pb.LoadRequest(model=pb.ModelSource(path=str(path), format="onnx")), TIMEOUT_S)
        assert not answer.model_id
        assert answer.failure.category == pb.FAILURE_CATEGORY_UNAVAILABLE
        assert answer.failure.message == described.unavailable_reason


def test_broken_backend_does_not_break_construction(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEEDSTER_RUN_BACKENDS", "broken=no.such.module:X")
    servicer = RunnerServicer("broken", tmp_path)
    assert servicer.backend is None and not servicer.availability.available


# -- CandidateError and in-band failure messages -------------------------------------------------------------------

def test_candidate_error_rejects_unknown_categories():
    with pytest.raises(ValueError, match="unknown failure category 'segfault'"):
        CandidateError("segfault", "boom")
    with pytest.raises(ValueError):
        CandidateError("COMPILE", "categories are lower-case short names")


@pytest.mark.parametrize("name", sorted(CATEGORIES))
def test_every_category_travels(name):
    error = CandidateError(name, "message", "detail")
    assert (error.category, error.message, error.detail, str(error)) == (name, "message", "detail", "message")
    message = failure(name, "message", "detail")
    assert pb.Failure.FromString(message.SerializeToString()).category == CATEGORIES[name]
    assert pb.FailureCategory.Name(CATEGORIES[name]) == f"FAILURE_CATEGORY_{name.upper()}"
    assert set(CATEGORIES.values()) == set(pb.FailureCategory.values()) - {pb.FAILURE_CATEGORY_UNSPECIFIED}


@pytest.mark.parametrize("error,phase,category", [
    (RuntimeError("CUDA error: out of memory"), "runtime", "oom"),
    (MemoryError(), "compile", "oom"),
    (ValueError("shapes differ\n  at node 3"), "compile", "compile"),
    (CandidateError("unavailable", "no such mode", "why"), "runtime", "unavailable"),
])
def test_the_runner_answers_failures_as_the_backend_base_categorises_them(error, phase, category):
    """Backends that override load or run themselves (plug-ins) get the same categories and one-line messages."""
    from runners.servicer import _candidate_failure
    from speedster_run.shared.errors import CATEGORY_NAMES, as_candidate_error

    answer = _candidate_failure(error, phase)
    expected = as_candidate_error(error, phase)
    assert (CATEGORY_NAMES[answer.category], answer.message) == (category, expected.message)
    assert "\n" not in answer.message and answer.detail


def test_a_benchmark_request_leaving_fields_unset_gets_the_shared_defaults():
    from speedster_run.shared import measure

    plan = measure.TimingPlan.from_request(pb.BenchmarkRequest(warmup_iterations=2, min_iterations=3))
    assert plan == measure.TimingPlan(warmup_iterations=2, min_iterations=3)
    assert (plan.max_time_s, plan.window_iterations, plan.stable_windows) == (
        measure.MAX_TIME_S, measure.WINDOW_ITERATIONS, measure.STABLE_WINDOWS)
