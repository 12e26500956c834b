"""compose/docker-compose.yml and compose/docker-compose.tls.yml, rendered from the backend catalog.

One service per catalog backend, named like it, in its catalog profile, on its catalog port: a backend added to the
catalog gets its service by rerunning `speedster-run images compose`, and tests/contract checks that the committed
files are this module's output. The text is written here rather than dumped from a dict so that the files keep their
comments, anchors and layout. It stays within docker-compose 1.29 (profiles need >= 1.28): no interpolated numbers
where 1.29 wants a number (pids_limit), merge keys for the shared settings.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from orchestrator.errors import UserError
from orchestrator.images.names import NAMESPACE, project_version
from orchestrator.images.paths import REPO
from speedster_run.shared import catalog

COMPOSE_DIR = REPO / "compose"
PLAIN_FILE = COMPOSE_DIR / "docker-compose.yml"
TLS_FILE = COMPOSE_DIR / "docker-compose.tls.yml"
WIDTH = 118  # the project's line length

CONTAINER_PORT = 50051  # where every runner listens inside its container; the host port is the catalog's
HEALTH_PORT = 50050  # the TLS file's plaintext, health-only port on the container's loopback
GPU_PROFILE = "gpu"  # its services reserve the host's NVIDIA GPUs (the NVIDIA container toolkit)
# Device files a service needs, by the device kinds its backend serves (compose's `devices`).
DEVICE_FILES = {"neuron": ("/dev/neuron0:/dev/neuron0",)}
# What a profile's services need from the host, for the header.
PROFILE_NOTES = {
    "gpu": "NVIDIA GPUs through the NVIDIA container toolkit",
    "neuron": "AWS Inferentia/Trainium: /dev/neuron0",
    "openvino-ep": "ONNX Runtime's OpenVINO execution provider",
}


def _comment(text: str) -> str:
    """A paragraph as `# ` lines of at most WIDTH characters."""
    return "\n".join(textwrap.wrap(text, WIDTH - 2, initial_indent="# ", subsequent_indent="# ",
                                   break_on_hyphens=False, break_long_words=False))


def _profiles_line() -> str:
    parts = []
    for profile, names in catalog.compose_profiles().items():
        note = PROFILE_NOTES.get(profile)
        parts.append(f"{profile} ({', '.join(names)}{': ' + note if note else ''})")
    return (f"Profiles: {', '.join(parts)}. Needs docker-compose >= 1.28 (profiles) or `docker compose`.")


def _generated_line(name: str) -> str:
    return _comment(f"{name} is generated from the backend catalog (proto/speedster_run/shared/catalog.py) by "
                    "`speedster-run images compose`: change the catalog (or orchestrator/compose_files.py) and rerun "
                    "it rather than editing this file.")


def port_variable(backend: str) -> str:
    """SPEEDSTER_RUN_PORT_<BACKEND>: the variable that moves a service's host port."""
    return "SPEEDSTER_RUN_PORT_" + backend.upper().replace("-", "_")


def _image(backend: str) -> str:
    # The default prefix gives the local name that `images build` and `images pull` leave (names.image_name); the
    # default tag is the project's version, as there.
    return f"${{SPEEDSTER_RUN_IMAGE_PREFIX:-{NAMESPACE}/}}{backend}:${{SPEEDSTER_RUN_TAG:-{project_version()}}}"


def _service(entry: catalog.BackendEntry, command: str, bind: str) -> str:
    anchors = "[*runner, *gpu]" if entry.compose_profile == GPU_PROFILE else "*runner"
    lines = [
        f"  {entry.name}:",
        f"    <<: {anchors}",
        f"    profiles: [{entry.compose_profile}]",
        f"    image: {_image(entry.name)}",
        command.format(backend=entry.name),
        f'    ports: ["{bind}:${{{port_variable(entry.name)}:-{entry.compose_port}}}:{CONTAINER_PORT}"]',
    ]
    devices = [path for kind in entry.devices for path in DEVICE_FILES.get(kind, ())]
    if devices:
        lines.append(f"    devices: [{', '.join(f'{chr(34)}{d}{chr(34)}' for d in devices)}]")
    return "\n".join(lines)


def _services(command: str, bind: str) -> str:
    ordered = [catalog.get(name) for names in catalog.compose_profiles().values() for name in names]
    return "services:\n" + "\n\n".join(_service(entry, command, bind) for entry in ordered) + "\n"


_GPU_ANCHOR = """x-gpu: &gpu
  deploy:
    resources:
      reservations:
        devices:
          - driver: nvidia
            count: all
            capabilities: [gpu]
  shm_size: 1g
"""


def render_plain() -> str:
    """docker-compose.yml: plaintext runners published on the host's loopback."""
    header = f"""\
# speedster-run runners as long-lived services, one per backend, each service named like its backend.
#
#   speedster-run images build onnxruntime openvino torch          (or: speedster-run images pull --registry REG ...)
#   docker-compose -f compose/docker-compose.yml --profile cpu up -d
#   speedster-run --model m.onnx --runner onnxruntime=127.0.0.1:50051 --runner openvino=127.0.0.1:50052 \\
#                 --runner torch=127.0.0.1:50053
#   docker-compose -f compose/docker-compose.yml --profile cpu down
#
{_comment(_profiles_line())}
#
# Security: inside its container a runner must listen on 0.0.0.0 to be published, hence `--insecure` below; the
# ports are published on the host's 127.0.0.1 only, so only this host's users reach them (loopback needs no TLS on
# the orchestrator's side either). Set SPEEDSTER_RUN_TOKEN in the environment of both `docker-compose up` and
# speedster-run to require a bearer token as well. To serve other hosts, use compose/docker-compose.tls.yml (TLS and
# a token, published on SPEEDSTER_RUN_BIND) instead of this file.
#
# Images: ${{SPEEDSTER_RUN_IMAGE_PREFIX}}<backend>:${{SPEEDSTER_RUN_TAG}}. The default prefix is the local name that
# `speedster-run images build` and `images pull --registry REG` produce (speedster-run/<backend>); to let compose pull
# from a registry itself, set SPEEDSTER_RUN_IMAGE_PREFIX=REG/speedster-run- (the name `images push` gives them).
#
# Everything else has a default that a variable overrides: SPEEDSTER_RUN_PORT_<BACKEND> (host ports, 50051...),
# SPEEDSTER_RUN_MEM_LIMIT (8g), SPEEDSTER_RUN_TMP_SIZE (models are uploaded and
# compiled in the tmpfs /tmp: 4g), SPEEDSTER_RUN_HEALTH_INTERVAL (10s).
#
{_generated_line("This file")}

x-runner: &runner
  # read-only root, no capabilities, no privilege escalation, uid 10001 (the image's USER); /tmp is the only
  # writable place (the runner's uploads, compiled models and artifacts) and lives in memory.
  read_only: true
  tmpfs:
    - /tmp:size=${{SPEEDSTER_RUN_TMP_SIZE:-4g}},mode=1777
  cap_drop: [ALL]
  security_opt: ["no-new-privileges:true"]
  init: true  # reaps what compilers spawn (torch inductor's workers)
  mem_limit: ${{SPEEDSTER_RUN_MEM_LIMIT:-8g}}
  memswap_limit: ${{SPEEDSTER_RUN_MEM_LIMIT:-8g}}
  pids_limit: 4096  # a number: docker-compose 1.29 rejects an interpolated string here
  environment:
    SPEEDSTER_RUN_TOKEN: ${{SPEEDSTER_RUN_TOKEN:-}}  # empty: no token (the runner reads it for TCP listeners)
  restart: unless-stopped
  stop_grace_period: 15s
  logging:
    driver: json-file
    options: {{max-size: 10m, max-file: "3"}}
  healthcheck:
    # grpc.health.v1 answers without a token; runners.healthcheck imports no backend library.
    test: ["CMD", "/opt/venv/bin/python", "-m", "runners.healthcheck", "127.0.0.1:{CONTAINER_PORT}"]
    interval: ${{SPEEDSTER_RUN_HEALTH_INTERVAL:-10s}}
    timeout: 5s
    retries: 3
    start_period: 120s

"""
    command = f'    command: [--backend, {{backend}}, --listen, "0.0.0.0:{CONTAINER_PORT}", --insecure]'
    return header + _GPU_ANCHOR + "\n" + _services(command, "127.0.0.1")


def render_tls() -> str:
    """docker-compose.tls.yml: the same runners for other hosts, with TLS and a bearer token."""
    header = f"""\
# The runners of docker-compose.yml for other hosts to use: TLS and a bearer token, published on SPEEDSTER_RUN_BIND.
# Use this file instead of docker-compose.yml (not on top of it: compose would publish both files' ports).
#
#   export SPEEDSTER_RUN_TLS_DIR=/etc/speedster-run   # server.pem (chain), server.key, token: readable by uid 10001
#   docker-compose -f compose/docker-compose.tls.yml --profile cpu up -d
#   # elsewhere, with the CA that signed server.pem and the same token:
#   speedster-run --model m.onnx --runner onnxruntime=runners.example.com:50051 \\
#       --runner-tls-ca ca.pem --runner-token-file token
#
# The files are bind-mounted read-only at /run/secrets/ (compose secrets without swarm), with their host owner and
# mode: `chown 10001 server.key token && chmod 0400 server.key token` keeps them private to the runner's uid.
# Every RunnerService call needs `authorization: Bearer <token>`; grpc.health.v1 stays open. The healthcheck runs
# inside the container against a plaintext, health-only port on the container's loopback (--health-listen).
# For mutual TLS, add `--tls-client-ca, /run/secrets/client_ca` to the commands and a client_ca secret; clients then
# pass --runner-tls-cert/--runner-tls-key. Same variables as docker-compose.yml, plus SPEEDSTER_RUN_BIND (0.0.0.0).
#
{_generated_line("This file")}

x-runner: &runner
  read_only: true
  tmpfs:
    - /tmp:size=${{SPEEDSTER_RUN_TMP_SIZE:-4g}},mode=1777
  cap_drop: [ALL]
  security_opt: ["no-new-privileges:true"]
  init: true
  mem_limit: ${{SPEEDSTER_RUN_MEM_LIMIT:-8g}}
  memswap_limit: ${{SPEEDSTER_RUN_MEM_LIMIT:-8g}}
  pids_limit: 4096
  secrets: [runner_cert, runner_key, runner_token]
  restart: unless-stopped
  stop_grace_period: 15s
  logging:
    driver: json-file
    options: {{max-size: 10m, max-file: "3"}}
  healthcheck:
    test: ["CMD", "/opt/venv/bin/python", "-m", "runners.healthcheck", "127.0.0.1:{HEALTH_PORT}"]
    interval: ${{SPEEDSTER_RUN_HEALTH_INTERVAL:-10s}}
    timeout: 5s
    retries: 3
    start_period: 120s

"""
    command = (f'    command: [--backend, {{backend}}, --listen, "0.0.0.0:{CONTAINER_PORT}", --health-listen, '
               f'"127.0.0.1:{HEALTH_PORT}",\n'
               "              --tls-cert, /run/secrets/runner_cert, --tls-key, /run/secrets/runner_key,\n"
               "              --token-file, /run/secrets/runner_token]")
    secrets = """
secrets:
  runner_cert:
    file: ${SPEEDSTER_RUN_TLS_DIR:?set SPEEDSTER_RUN_TLS_DIR (the directory of server.pem, server.key, token)}/server.pem
  runner_key:
    file: ${SPEEDSTER_RUN_TLS_DIR:?set SPEEDSTER_RUN_TLS_DIR}/server.key
  runner_token:
    file: ${SPEEDSTER_RUN_TLS_DIR:?set SPEEDSTER_RUN_TLS_DIR}/token
"""
    return header + _GPU_ANCHOR + "\n" + _services(command, "${SPEEDSTER_RUN_BIND:-0.0.0.0}") + secrets


RENDERERS = {PLAIN_FILE: render_plain, TLS_FILE: render_tls}


def stale_files() -> list[Path]:
    """The compose files whose text is not what the catalog renders (missing ones included)."""
    return [path for path, render in RENDERERS.items() if not path.exists() or path.read_text() != render()]


def write_files() -> list[Path]:
    """Rewrites the compose files that differ from their rendering; returns those it rewrote."""
    if not COMPOSE_DIR.is_dir():
        raise UserError(f"the compose files live in a source checkout of speedster-run ({COMPOSE_DIR} not found)")
    rewritten = stale_files()
    for path in rewritten:
        path.write_text(RENDERERS[path]())
    return rewritten
