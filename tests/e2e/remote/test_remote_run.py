"""Whole runs against runners that someone else started (--runner NAME=ADDR), and the remote sandbox's contract."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time

import pytest

from orchestrator.config import RunConfig, RunnerSecurity, TimingConfig
from orchestrator.errors import UserError
from orchestrator.pool import CallFailure, RunnerPool
from orchestrator.run import optimize
from orchestrator.sandboxes.base import SandboxError
from orchestrator.sandboxes.factory import make_sandbox
from orchestrator.sandboxes.remote import RemoteSandbox, parse_runner
from speedster_run.runner.v1 import runner_pb2 as pb
from tests.conftest import FAKE_BACKEND, FAST, assert_user_error, cli, mlp_onnx
from tests.e2e.remote.support import TOKEN, RemoteRunner, free_port, runner_env



def test_cli_run_streams_the_model_to_a_tls_runner_and_leaves_it_running(tls_runner, pki, token_file, tmp_path):
    (tmp_path / "orchestrator-only").mkdir()
    model = mlp_onnx(tmp_path / "orchestrator-only" / "mlp.onnx")
    report_path = tmp_path / "report.json"
    result = cli("--model", model, "--runner", f"onnxruntime={tls_runner.address}", "--runner-tls-ca", pki.ca,
                 "--runner-token-file", token_file, "--metric-drop-ths", "0.5", "--report", report_path, *FAST)
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    rows = {row["name"]: row for row in report["candidates"]}
    assert rows["onnxruntime/fp32"]["status"] in ("ok", "WINNER") and report["winner"] in rows
    assert {row["backend"] for row in report["candidates"]} == {"onnxruntime"}  # only the backends given
    assert all(row["runner_description"] == f"remote runner at {tls_runner.address}" for row in report["candidates"]
               if row["status"] == "ok")
    assert report["environment"]["sandbox"] == "remote"
    assert report["environment"]["remote_runners"] == {"onnxruntime": tls_runner.address}
    assert report["environment"]["remote_tls"] and report["environment"]["remote_token"]
    assert report["config"]["runner_addresses"] == [["onnxruntime", tls_runner.address]]
    assert report["config"]["runner_security"]["token"] == "(set)" and TOKEN not in report_path.read_text()
    # The runner got the model through an upload (it runs elsewhere, in another directory): one per run and format,
    # deleted at the run's end with everything the run loaded; the runner itself keeps serving.
    uploaded, deleted = runner_log_uploads(tls_runner)
    assert len(uploaded) == 1 and uploaded == deleted
    assert not list(tls_runner.scratch().glob("uploads/*")) and not list(tls_runner.scratch().glob("models/*"))
    assert tls_runner.alive()
    tls_runner.wait_serving(timeout_s=5, tls_ca=pki.ca)


def runner_log_uploads(runner: RemoteRunner) -> tuple[list[str], list[str]]:
    """The upload ids a runner logged as received, and those it logged as deleted."""
    text = runner.log.read_text()
    return re.findall(r"upload (\w+): \d+ files", text), re.findall(r"upload (\w+) deleted", text)


def test_three_runs_leave_no_upload_on_a_long_lived_runner(tmp_path):
    """A compose service serves run after run: each run deletes what it uploaded, so its tmpfs does not fill."""
    runner = RemoteRunner("onnxruntime", tmp_path / "home")
    try:
        runner.wait_serving()
        for run in range(3):
            (tmp_path / f"run{run}").mkdir()
            config = RunConfig(model=mlp_onnx(tmp_path / f"run{run}" / "mlp.onnx"), samples=2, sandbox="remote",
                               runner_addresses=(("onnxruntime", runner.address),),
                               timing=TimingConfig(time_budget_s=0.1, rounds=1, warmup_iterations=1))
            report = optimize(config, sandbox=RemoteSandbox(config.runner_addresses))
            assert report.winner, [row.failure for row in report.candidates]
            assert not list(runner.scratch().glob("uploads/*")), f"run {run} left its upload"
            assert not list(runner.scratch().glob("models/*")), f"run {run} left a model loaded"
        uploaded, deleted = runner_log_uploads(runner)
        assert len(uploaded) == 3 and sorted(uploaded) == sorted(deleted)
        assert runner.alive()
    finally:
        runner.stop()


def test_a_wrong_token_is_a_configuration_error_naming_the_runner(tls_runner, pki, tmp_path):
    """UNAUTHENTICATED is not every candidate's failure: exit 2, one line, before any candidate runs."""
    model = mlp_onnx(tmp_path / "mlp.onnx")
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    runner = f"onnxruntime={tls_runner.address}"
    assert_user_error(cli("--model", model, "--runner", runner, "--runner-tls-ca", pki.ca, "--runner-token-file",
                          wrong, *FAST),
                      f"runner for onnxruntime at {tls_runner.address} refused the token given (UNAUTHENTICATED)")
    env = {k: v for k, v in os.environ.items() if k != "SPEEDSTER_RUN_TOKEN"}
    assert_user_error(cli("--model", model, "--runner", runner, "--runner-tls-ca", pki.ca, *FAST, env=env),
                      f"runner for onnxruntime at {tls_runner.address} requires a token (UNAUTHENTICATED)")
    # A sandbox made by hand (the Python API) finds it when the runner starts: nothing turns it into rows.
    config = RunConfig(model=model, samples=2, sandbox="remote", runner_addresses=(("onnxruntime", tls_runner.address),),
                       runner_security=RunnerSecurity(tls_ca=pki.ca, token="not-the-token"))
    with pytest.raises(UserError, match="refused the token given"):
        optimize(config, sandbox=RemoteSandbox(config.runner_addresses, config.runner_security))


def test_cli_user_errors_for_runners(tmp_path, pki, token_file):
    model = mlp_onnx(tmp_path / "mlp.onnx")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime=10.1.2.3:50051"),
                      "is not a loopback address: it needs --runner-tls-ca and a token")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime=10.1.2.3:50051", "--runner-tls-ca", pki.ca),
                      "needs a token")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime=10.1.2.3:50051", "--runner-token-file",
                          token_file), "needs --runner-tls-ca")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime=127.0.0.1"), "expected host:port")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime"), "expected NAME=ADDR")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime=127.0.0.1:1", "--sandbox", "local"),
                      "--runner needs --sandbox remote")
    assert_user_error(cli("--model", model, "--sandbox", "remote"), "needs at least one --runner")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime=127.0.0.1:1", "--backends", "openvino"),
                      "no --runner given for backend openvino")
    assert_user_error(cli("--model", model, "--runner", "nope=127.0.0.1:1"), "unknown backend 'nope'")
    # The original model's backend computes the reference outputs: its runner cannot be left out.
    assert_user_error(cli("--model", model, "--runner", "openvino=127.0.0.1:1"),
                      "no --runner given for backend onnxruntime, which runs the original model")
    assert_user_error(cli("--model", model, "--runner", "onnxruntime=127.0.0.1:1", "--runner-tls-ca",
                          tmp_path / "missing.pem"), "no such file")


def test_the_python_api_checks_runner_security_too(tmp_path):
    config = RunConfig(model=mlp_onnx(tmp_path / "mlp.onnx"), sandbox="remote",
                       runner_addresses=(("onnxruntime", "192.0.2.1:50051"),))
    with pytest.raises(UserError, match="not a loopback address"):
        make_sandbox(config)
    insecure = RunConfig(model=config.model, sandbox="remote", runner_addresses=config.runner_addresses,
                         runner_security=RunnerSecurity(insecure=True))
    assert isinstance(make_sandbox(insecure), RemoteSandbox)
    # The same checks as the CLI's: they live in one place, the one that makes the remote sandbox.
    with pytest.raises(UserError, match="needs at least one --runner"):
        make_sandbox(RunConfig(model=config.model, sandbox="remote"))
    twice = (("onnxruntime", "127.0.0.1:1"), ("onnxruntime", "127.0.0.1:2"))
    with pytest.raises(UserError, match="--runner given twice for onnxruntime"):
        make_sandbox(RunConfig(model=config.model, sandbox="remote", runner_addresses=twice))
    only_openvino = RunConfig(model=config.model, sandbox="remote", backends=("openvino",),
                              runner_addresses=(("onnxruntime", "127.0.0.1:1"),))
    with pytest.raises(UserError, match=r"no --runner given for backend openvino \(--sandbox remote uses only"):
        make_sandbox(only_openvino, ["openvino", "onnxruntime"])
    with pytest.raises(UserError, match="no --runner given for backend onnxruntime, which runs the original"):
        make_sandbox(dataclasses.replace(only_openvino, runner_addresses=(("openvino", "127.0.0.1:1"),)),
                     ["openvino", "onnxruntime"])
    assert parse_runner("torch=unix:///run/speedster/torch.sock") == ("torch", "unix:///run/speedster/torch.sock")


def test_a_dead_runner_fails_its_backend_without_failing_the_run(tls_runner, pki, tmp_path):
    """openvino's runner does not answer: its row says so; onnxruntime's candidates still run."""
    dead = f"127.0.0.1:{free_port()}"
    config = RunConfig(model=mlp_onnx(tmp_path / "mlp.onnx"), samples=2, sandbox="remote",
                       runner_addresses=(("onnxruntime", tls_runner.address), ("openvino", dead)),
                       runner_security=RunnerSecurity(tls_ca=pki.ca, token=TOKEN),
                       timing=TimingConfig(time_budget_s=0.2, rounds=1, warmup_iterations=1))
    sandbox = RemoteSandbox(config.runner_addresses, config.runner_security, ready_timeout_s=1.0)
    report = optimize(config, sandbox=sandbox)
    rows = {row.name: row for row in report.candidates}
    assert rows["onnxruntime/fp32"].status in ("ok", "WINNER")
    openvino = [row for row in report.candidates if row.backend == "openvino"]
    assert openvino and all(row.status != "ok" for row in openvino)
    assert any(f"runner for openvino at {dead} is not serving" in (row.failure.message if row.failure else "")
               for row in openvino), [row.failure for row in openvino]
    assert tls_runner.alive()


def test_remote_sandbox_contract(tls_runner, pki):
    sandbox = RemoteSandbox([("onnxruntime", tls_runner.address), ("openvino", f"127.0.0.1:{free_port()}")],
                            RunnerSecurity(tls_ca=pki.ca, token=TOKEN), ready_timeout_s=1.0)
    assert not sandbox.shares_filesystem and not sandbox.can_kill
    with pytest.raises(SandboxError, match="no --runner given for backend torch"):
        sandbox.start("torch", 1)
    with pytest.raises(SandboxError, match="runner for openvino at 127.0.0.1:.* is not serving"):
        sandbox.start("openvino", 1)
    runner = sandbox.start("onnxruntime", 1)
    assert runner.target == tls_runner.address and sandbox.exit_info(runner) is None
    assert sandbox.logs(runner) == ""
    command = sandbox.reproduce_command(runner)
    assert f"--sandbox remote --runner onnxruntime={tls_runner.address}" in command and TOKEN not in command
    sandbox.kill(runner)
    sandbox.stop(runner)
    sandbox.close()
    assert tls_runner.alive() and sandbox.exit_info(runner) is None


def test_exit_info_reports_a_runner_that_stopped_answering(tmp_path):
    runner = RemoteRunner("onnxruntime", tmp_path)  # loopback: no TLS needed
    try:
        runner.wait_serving()
        sandbox = RemoteSandbox([("onnxruntime", runner.address)])
        process = sandbox.start("onnxruntime", 1)
        assert sandbox.exit_info(process) is None
    finally:
        runner.stop()
    info = sandbox.exit_info(process)
    assert info is not None and info.category == "crash" and "stopped answering" in info.message
    sandbox.close()


def test_a_timed_out_call_leaves_the_remote_runner_in_use(tmp_path, monkeypatch):
    """The pool cannot kill a remote runner: the candidate is "timeout", the runner (still busy) stays current."""
    monkeypatch.setattr("orchestrator.sandboxes.remote.UNLOAD_TIMEOUT_S", 1.0)
    env = runner_env(SPEEDSTER_RUN_BACKENDS=FAKE_BACKEND, SPEEDSTER_FAKE_VARIANTS="ok,hang",
                     SPEEDSTER_RUN_TOKEN=TOKEN)
    runner = RemoteRunner("fake", tmp_path / "home", env=env)
    model = mlp_onnx(tmp_path / "mlp.onnx", inputs=8, outputs=4)
    try:
        runner.wait_serving()
        pool = RunnerPool(RemoteSandbox([("fake", runner.address)], RunnerSecurity(token=TOKEN)), threads=1)
        generation = pool.generation("fake")
        upload_id = pool.call("fake", lambda c: c.upload(model.parent, [model.name], 30))

        def load(variant: str, timeout_s: float):
            source = pb.ModelSource(upload_id=upload_id, file_name=model.name, format="onnx")
            request = pb.LoadRequest(model=source, device="cpu", precision="fp32", variant=variant, threads=1)
            return pool.call("fake", lambda c: c.load(request, timeout_s))

        assert load("ok", 30).model_id
        started = time.monotonic()
        with pytest.raises(CallFailure) as caught:
            load("hang", 1.0)
        assert caught.value.category == "timeout" and "not ours to kill" in caught.value.message
        assert time.monotonic() - started < 10
        assert runner.alive() and pool.is_current("fake", generation)
        # The next call is answered "busy" at once and retried within its deadline (a hung compile never ends
        # here): it fails in turn, saying what the runner serves. Describe, which touches no device, still answers.
        with pytest.raises(CallFailure) as busy:
            load("ok", 1.0)
        assert busy.value.category == "timeout"
        assert busy.value.message.startswith("runner busy: serving Load since ")
        assert pool.call("fake", lambda c: c.describe(timeout_s=5.0)).backend == "fake"
        assert pool.is_current("fake", generation) and runner.alive()
        closed = time.monotonic()
        pool.close()  # unloading the "ok" model gives up after UNLOAD_TIMEOUT_S on a busy runner; nothing is killed
        assert time.monotonic() - closed < 5 and runner.alive()
    finally:
        runner.stop(grace_s=0.5)  # stuck in the hung compile: SIGTERM cannot finish it
