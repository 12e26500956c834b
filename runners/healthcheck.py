"""A container's HEALTHCHECK: exit 0 when the runner answers grpc.health.v1 SERVING, 1 otherwise; one line of output.

    python -m runners.healthcheck [ADDRESS]

ADDRESS: unix:///path.sock or host:port. Without it, the address of the runner that is the container's main process
(PID 1) is used, its --health-listen if it has one (the plaintext health port of a TLS runner), else its --listen, so
an image whose CMD is overridden (`--listen 0.0.0.0:50051` under compose) checks the right place; failing that,
unix:///run/speedster/runner.sock. Imports gRPC and the health protocol only, never a backend library:
it runs every few seconds beside the runner.
"""

from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_ADDRESS = "unix:///run/speedster/runner.sock"
TIMEOUT_S = 3.0


def _option(cmdline: list[str], name: str) -> str | None:
    for index, argument in enumerate(cmdline):
        if argument == name and index + 1 < len(cmdline):
            return cmdline[index + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    return None


def _listen_of(cmdline: list[str]) -> str | None:
    """Where a runners.server command line answers health checks in plaintext: its --health-listen (a runner that
    serves TLS keeps one on loopback), else its --listen."""
    if "runners.server" not in cmdline:
        return None
    return _option(cmdline, "--health-listen") or _option(cmdline, "--listen")


def target_for(listen: str) -> str:
    """The address a client dials for a runner's --listen: wildcard hosts become the loopback address."""
    if listen.startswith("unix:"):
        return listen
    if listen.startswith("/"):
        return f"unix://{listen}"
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::", "*"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def default_address(proc: Path = Path("/proc/1/cmdline")) -> str:
    try:
        cmdline = proc.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return DEFAULT_ADDRESS
    listen = _listen_of(cmdline)
    return target_for(listen) if listen else DEFAULT_ADDRESS


def check(address: str, timeout_s: float = TIMEOUT_S) -> tuple[bool, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s, wait_for_ready=True)
    except grpc.RpcError as error:
        details = (error.details() or "").splitlines()[0] if hasattr(error, "details") else str(error)
        return False, f"not serving: {address}: {error.code().name} {details}".rstrip()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    return answer.status == health_pb2.HealthCheckResponse.SERVING, f"{status} {address}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0])
        return 0
    address = target_for(argv[0]) if argv else default_address()
    healthy, line = check(address)
    print(line, flush=True)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
