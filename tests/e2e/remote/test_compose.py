"""Runners as compose services, and images that travel through a registry, driven by the real tools.

The file checks (`docker-compose config`) need only the docker-compose program. The others need a Docker engine and
the images (`speedster-run images build onnxruntime openvino`): they skip without them, and fail instead under
SPEEDSTER_RUN_REQUIRE_DOCKER=1 (CI builds the images first).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from orchestrator.images import image_name
from speedster_run.shared import catalog
from tests.conftest import assert_user_error, mlp_onnx
from tests.docker_support import docker_engine, missing, require_images  # noqa: F401  (docker_engine: a fixture)
from tests.e2e.remote.support import REPO, TOKEN, free_port, make_pki

COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
TLS_COMPOSE_FILE = REPO / "compose" / "docker-compose.tls.yml"
PROFILES = catalog.compose_profiles()  # profile -> its services, one per catalog backend
FAST = ["--time-budget", "0.3", "--rounds", "2", "--samples", "2", "--warmup", "2"]


def compose_program() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose_cmd():
    program = compose_program()
    if program is None:
        missing("needs docker-compose (or the docker compose plugin)")
    return program


def compose(program, *args, env=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    result = subprocess.run([*program, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                            env={**os.environ, **(env or {})})
    if check:
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr[-3000:]}"
    return result


def compose_config(program, path: Path, env: dict[str, str] | None = None) -> dict:
    profiles = [word for profile in PROFILES for word in ("--profile", profile)]
    return yaml.safe_load(compose(program, "-f", str(path), *profiles, "config", env=env).stdout)


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env={**os.environ, **(env or {})})


# -- the files ------------------------------------------------------------------------------------------------------
def test_compose_files_name_services_and_images_like_the_backends(compose_cmd, tmp_path):
    base = compose_config(compose_cmd, COMPOSE_FILE)
    tls = compose_config(compose_cmd, TLS_COMPOSE_FILE, env={"SPEEDSTER_RUN_TLS_DIR": str(tmp_path)})
    for config in (base, tls):
        services = config["services"]
        assert sorted(services) == sorted(name for names in PROFILES.values() for name in names)
        for profile, names in PROFILES.items():
            for name in names:
                service = services[name]
                assert service["profiles"] == [profile]
                assert service["image"] == image_name(name, "0.1.0")  # what `images build` / `images pull` leave
                assert service["command"][:4] == ["--backend", name, "--listen", "0.0.0.0:50051"]
                assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
                assert "no-new-privileges:true" in service["security_opt"]
                assert "/tmp" in service["tmpfs"][0] and service["mem_limit"] and service["pids_limit"]
                assert "runners.healthcheck" in service["healthcheck"]["test"]
        for name in PROFILES["gpu"]:
            (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
            assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert services["neuron"]["devices"] == ["/dev/neuron0:/dev/neuron0"]
    ports = {name: service["ports"][0] for name, service in base["services"].items()}
    assert all(port.startswith("127.0.0.1:") for port in ports.values())  # the plaintext file: loopback only
    assert {name: int(port.split(":")[1]) for name, port in ports.items()} == \
        {name: catalog.get(name).compose_port for name in catalog.names()}
    assert all("--insecure" not in s["command"] and "--tls-cert" in s["command"] and "--token-file" in s["command"]
               for s in tls["services"].values())
    # With a registry prefix, compose pulls the very names `speedster-run images push --registry` gives.
    pulled = compose_config(compose_cmd, COMPOSE_FILE, env={"SPEEDSTER_RUN_IMAGE_PREFIX": "reg.example:5000/sr/"
                                                            "speedster-run-", "SPEEDSTER_RUN_TAG": "9.9"})
    assert pulled["services"]["openvino"]["image"] == image_name("openvino", "9.9", "reg.example:5000/sr")


# -- services ---------------------------------------------------------------------------------------------------------
def wait_healthy(client, project: str, services: list[str], timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        states = {}
        for container in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}):
            container.reload()
            service = container.labels.get("com.docker.compose.service")
            states[service] = (container.attrs["State"].get("Health") or {}).get("Status", container.status)
        if all(states.get(name) == "healthy" for name in services):
            return
        if time.monotonic() > deadline:
            logs = {c.name: c.logs(tail=5).decode(errors="replace") for c in client.containers.list(
                all=True, filters={"label": f"com.docker.compose.project={project}"})}
            raise AssertionError(f"services not healthy after {timeout_s:.0f} s: {states}; logs: {logs}")
        time.sleep(0.5)


def project_leftovers(client, project: str) -> list[str]:
    label = {"label": f"com.docker.compose.project={project}"}
    return ([c.name for c in client.containers.list(all=True, filters=label)]
            + [n.name for n in client.networks.list(filters=label)])


@pytest.mark.docker
def test_compose_cpu_services_serve_a_run_and_go_away(docker_engine, compose_cmd, tmp_path):
    require_images(docker_engine, "onnxruntime", "openvino")
    project = f"srtest{uuid.uuid4().hex[:8]}"
    ports = {"onnxruntime": free_port(), "openvino": free_port()}
    env = {"SPEEDSTER_RUN_PORT_ONNXRUNTIME": str(ports["onnxruntime"]), "SPEEDSTER_RUN_PORT_OPENVINO":
           str(ports["openvino"]), "SPEEDSTER_RUN_HEALTH_INTERVAL": "1s", "SPEEDSTER_RUN_TOKEN": ""}
    args = ["-p", project, "-f", str(COMPOSE_FILE), "--profile", "cpu"]
    try:
        compose(compose_cmd, *args, "up", "-d", "onnxruntime", "openvino", env=env)
        wait_healthy(docker_engine, project, ["onnxruntime", "openvino"])
        for container in docker_engine.containers.list(filters={"label": f"com.docker.compose.project={project}"}):
            host = container.attrs["HostConfig"]
            assert host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"] and host["PidsLimit"] > 0
            assert host["Memory"] > 0 and "no-new-privileges:true" in host["SecurityOpt"]
            assert container.attrs["Config"]["User"].startswith("10001")
            bindings = host["PortBindings"]["50051/tcp"]
            assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        report_path = tmp_path / "report.json"
        runners = [word for name, port in ports.items() for word in ("--runner", f"{name}=127.0.0.1:{port}")]
        result = cli("--model", mlp_onnx(tmp_path / "mlp.onnx"), *runners, "--report", report_path, *FAST,
                     env={"SPEEDSTER_RUN_TOKEN": ""})
        assert result.returncode == 0, result.stderr[-3000:]
        rows = {row["name"]: row for row in json.loads(report_path.read_text())["candidates"]}
        for name in ("onnxruntime/fp32", "openvino/fp32"):
            assert rows[name]["status"] in ("ok", "WINNER"), (name, rows[name].get("failure"))
            assert rows[name]["runner_description"] == f"remote runner at 127.0.0.1:{ports[name.split('/')[0]]}"
        # The services outlive the run: still healthy afterwards, with none of the run's uploads left in their tmpfs.
        wait_healthy(docker_engine, project, ["onnxruntime", "openvino"], timeout_s=10)
        for container in docker_engine.containers.list(filters={"label": f"com.docker.compose.project={project}"}):
            listed = container.exec_run(["python", "-c", "import glob; print(glob.glob('/tmp/runner-*/uploads/*'))"])
            assert listed.exit_code == 0 and listed.output.decode().strip() == "[]", listed.output
    finally:
        compose(compose_cmd, *args, "down", "--remove-orphans", "--timeout", "5", env=env, check=False)
    assert project_leftovers(docker_engine, project) == []


# -- a registry --------------------------------------------------------------------------------------------------------
class Registry:
    """Debian's docker-registry (distribution) on 127.0.0.1:<port>, storage in a temporary directory, no auth.
    Docker engines treat 127.0.0.0/8 as an insecure registry without configuration."""

    def __init__(self):
        program = shutil.which("docker-registry") or shutil.which("registry")
        if program is None:
            missing("needs a registry program (apt-get install docker-registry)")
        self.root = Path(tempfile.mkdtemp(prefix="sr-registry-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        config = self.root / "config.yml"
        config.write_text(yaml.safe_dump({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.address},
        }))
        self.log = open(self.root / "registry.log", "wb")
        self.process = subprocess.Popen([program, "serve", str(config)], stdout=self.log, stderr=self.log,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"registry did not start: {(self.root / 'registry.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.mark.docker
def test_image_pushed_to_a_registry_and_pulled_back_serves_a_tls_run(docker_engine, compose_cmd, tmp_path):
    """push -> remove the local tags -> pull -> the registry image as a TLS + token compose service -> a run."""
    import docker

    require_images(docker_engine, "onnxruntime")
    # A tag of this test's own: other tests (and users) keep using speedster-run/onnxruntime:<version> meanwhile.
    tag = f"regtest-{uuid.uuid4().hex[:8]}"
    pki = make_pki(tmp_path / "tls")  # server.pem, server.key: the names compose/docker-compose.tls.yml expects
    (tmp_path / "tls" / "token").write_text(TOKEN + "\n")
    registry = Registry()
    prefix = f"{registry.address}/speedster-run"
    remote_name = image_name("onnxruntime", tag, prefix)
    project = f"srtest{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {"SPEEDSTER_RUN_TLS_DIR": str(tmp_path / "tls"), "SPEEDSTER_RUN_BIND": "127.0.0.1",
           "SPEEDSTER_RUN_PORT_ONNXRUNTIME": str(port), "SPEEDSTER_RUN_HEALTH_INTERVAL": "1s",
           "SPEEDSTER_RUN_IMAGE_PREFIX": f"{prefix}/speedster-run-", "SPEEDSTER_RUN_TAG": tag}
    args = ["-p", project, "-f", str(TLS_COMPOSE_FILE), "--profile", "cpu"]
    try:
        docker_engine.images.get(image_name("onnxruntime")).tag(image_name("onnxruntime", tag).rsplit(":", 1)[0], tag)
        pushed = cli("images", "push", "onnxruntime", "--registry", prefix, "--tag", tag)
        assert pushed.returncode == 0, pushed.stderr[-2000:] + pushed.stdout[-2000:]
        image_id = docker_engine.images.get(image_name("onnxruntime", tag)).id
        for name in (image_name("onnxruntime", tag), remote_name):
            docker_engine.images.remove(name)
        with pytest.raises(docker.errors.ImageNotFound):
            docker_engine.images.get(remote_name)
        pulled = cli("images", "pull", "onnxruntime", "--registry", prefix, "--tag", tag)
        assert pulled.returncode == 0, pulled.stderr[-2000:] + pulled.stdout[-2000:]
        assert docker_engine.images.get(remote_name).id == image_id
        assert docker_engine.images.get(image_name("onnxruntime", tag)).id == image_id  # the local name is back

        compose(compose_cmd, *args, "up", "-d", "onnxruntime", env=env)
        wait_healthy(docker_engine, project, ["onnxruntime"])
        (container,) = docker_engine.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        assert container.attrs["Config"]["Image"] == remote_name
        report_path = tmp_path / "report.json"
        model = mlp_onnx(tmp_path / "mlp.onnx")
        result = cli("--model", model, "--runner", f"onnxruntime=127.0.0.1:{port}", "--runner-tls-ca", pki.ca,
                     "--runner-token-file", tmp_path / "tls" / "token", "--report", report_path, *FAST)
        assert result.returncode == 0, result.stderr[-3000:]
        rows = {row["name"]: row for row in json.loads(report_path.read_text())["candidates"]}
        assert rows["onnxruntime/fp32"]["status"] in ("ok", "WINNER"), rows["onnxruntime/fp32"].get("failure")
        # Without the token the same runner answers UNAUTHENTICATED: a configuration error, before any candidate.
        refused = cli("--model", model, "--runner", f"onnxruntime=127.0.0.1:{port}", "--runner-tls-ca", pki.ca,
                      *FAST, env={k: v for k, v in os.environ.items() if k != "SPEEDSTER_RUN_TOKEN"})
        assert_user_error(refused, f"runner for onnxruntime at 127.0.0.1:{port} requires a token (UNAUTHENTICATED)")
    finally:
        compose(compose_cmd, *args, "down", "--remove-orphans", "--timeout", "5", env=env, check=False)
        for name in (image_name("onnxruntime", tag), remote_name):
            try:
                docker_engine.images.remove(name)
            except docker.errors.APIError:
                pass
        registry.close()
    assert project_leftovers(docker_engine, project) == []
