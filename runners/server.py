"""The backend-agnostic runner: serves one backend over gRPC with grpc.health.v1, until SIGTERM.

    python -m runners.server --backend onnxruntime --listen unix:///tmp/r.sock   (or --listen 127.0.0.1:50051)
    python -m runners.server --backend onnxruntime --listen 0.0.0.0:50051 --tls-cert server.pem --tls-key server.key \
        --token-file token.txt        (a runner other hosts reach: TLS and a bearer token; see runners/security.py)

A non-loopback TCP address without both TLS and a token is refused unless --insecure is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import signal
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from runners import security
from runners.servicer import RunnerServicer
from speedster_run.runner.v1 import GRPC_OPTIONS, SERVICE_NAME
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc

log = logging.getLogger("runners.server")


def parse_listen(address: str) -> str:
    """"unix:///abs/path.sock", "unix:rel.sock", "/abs/path.sock" or "host:port" -> a gRPC bind address."""
    if address.startswith("unix:"):
        return address
    if address.startswith("/"):
        return f"unix://{address}"
    _, sep, port = address.rpartition(":")
    # gRPC silently takes a port above 65535 modulo 65536, so the range is checked here.
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {address!r}: expected unix:///path.sock or host:port (port 0-65535)")
    return address


@dataclasses.dataclass(frozen=True)
class ServerSecurity:
    """How a TCP runner protects itself: TLS (optionally requiring client certificates) and a bearer token."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    insecure: bool = False  # allow a non-loopback address without TLS and a token
    health_listen: str | None = None  # an extra plaintext, health-only, loopback port (in-container probes)


def check_security(listen: str, sec: ServerSecurity) -> None:
    """SystemExit with one line when the settings are inconsistent or would expose an unprotected runner."""
    if (sec.tls_cert is None) != (sec.tls_key is None):
        raise SystemExit("runner: --tls-cert and --tls-key go together")
    if sec.tls_client_ca is not None and sec.tls_cert is None:
        raise SystemExit("runner: --tls-client-ca needs --tls-cert and --tls-key")
    if sec.health_listen is not None and not security.is_loopback(sec.health_listen):
        raise SystemExit(f"runner: --health-listen {sec.health_listen} must be a loopback address or a unix socket")
    protected = sec.tls_cert is not None and bool(sec.token)
    if not security.is_loopback(listen) and not protected and not sec.insecure:
        raise SystemExit(f"runner: refusing to listen on {listen} without TLS and a token (--tls-cert/--tls-key and "
                         f"--token-file or ${security.TOKEN_ENV}); pass --insecure to allow it")


def _bind(server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None) -> bool:
    try:
        bound: int | None = (server.add_insecure_port(address) if credentials is None
                             else server.add_secure_port(address, credentials))
    except RuntimeError:  # grpcio now raises where it used to return 0
        bound = None
    return not (bound is None or (bound == 0 and not address.startswith("unix:")))


def serve(backend_name: str, listen: str, workdir: Path | None = None, sec: ServerSecurity | None = None) -> None:
    """Runs the runner until SIGTERM/SIGINT."""
    sec = sec or ServerSecurity()
    try:
        address = parse_listen(listen)
        health_address = parse_listen(sec.health_listen) if sec.health_listen else None
    except ValueError as error:
        raise SystemExit(f"runner: {error}") from None
    check_security(address, sec)
    try:
        credentials = (security.server_credentials(sec.tls_cert, sec.tls_key, sec.tls_client_ca)
                       if sec.tls_cert is not None else None)
    except security.SecurityConfigError as error:
        raise SystemExit(f"runner: {error}") from None
    scratch = Path(tempfile.mkdtemp(prefix=f"runner-{backend_name}-", dir=workdir))
    servicer = RunnerServicer(backend_name, scratch)
    interceptors = [security.TokenInterceptor(sec.token)] if sec.token else []
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=GRPC_OPTIONS, interceptors=interceptors)
    pb_grpc.add_RunnerServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if not _bind(server, address, credentials):
        shutil.rmtree(scratch, ignore_errors=True)
        raise SystemExit(f"runner: cannot listen on {listen}")
    servers = [server]
    if health_address is not None:  # health only, plaintext: for a probe inside the container of a TLS runner
        health_server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        if not _bind(health_server, health_address, None):
            shutil.rmtree(scratch, ignore_errors=True)
            raise SystemExit(f"runner: cannot listen on {sec.health_listen}")
        servers.append(health_server)
    # Handlers before SERVING: a stop sent as soon as the runner is ready must still shut it down cleanly.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    for each in servers:
        each.start()
    # SERVING only after the probe: the orchestrator's readiness check means "Describe will answer at once".
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("runner %s listening on %s (tls=%s, mtls=%s, token=%s, available=%s)", backend_name, listen,
             credentials is not None, sec.tls_client_ca is not None, bool(sec.token), servicer.availability.available)
    # Polled, not one blocking wait: a signal the kernel hands to one of gRPC's threads only runs its Python handler
    # when the main thread next executes bytecode, so an unbounded wait could ignore SIGTERM for good.
    while not stop.wait(timeout=0.2):
        pass
    for each in servers:
        each.stop(grace=1).wait()
    shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runners.server", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, help="registered backend name")
    parser.add_argument("--listen", required=True, help="unix:///path.sock or host:port")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: system temp)")
    parser.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve TCP over TLS")
    parser.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", type=Path, default=None,
                        help="PEM CA: require client certificates signed by it (mutual TLS)")
    parser.add_argument("--token-file", type=Path, default=None,
                        help=f"file holding the bearer token every RunnerService call must carry (default: "
                             f"${security.TOKEN_ENV} when set and --listen is TCP; grpc.health.v1 stays open)")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback address without TLS and a token (a trusted private network only)")
    parser.add_argument("--health-listen", default=None, metavar="127.0.0.1:PORT",
                        help="also serve grpc.health.v1 alone, in plaintext, on this loopback address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        # $SPEEDSTER_RUN_TOKEN applies to TCP listeners only: a unix socket is guarded by its file permissions, and
        # the local sandbox's runners inherit the orchestrator's environment, where the variable may be set.
        tcp = not parse_listen(args.listen).startswith("unix:")
        token = security.read_token(args.token_file, None if tcp else {})
    except ValueError as error:  # a bad --listen, an unreadable or empty token file
        raise SystemExit(f"runner: {error}") from None
    sec = ServerSecurity(tls_cert=args.tls_cert, tls_key=args.tls_key, tls_client_ca=args.tls_client_ca, token=token,
                         insecure=args.insecure, health_listen=args.health_listen)
    serve(args.backend, args.listen, args.workdir, sec)


if __name__ == "__main__":
    main()
