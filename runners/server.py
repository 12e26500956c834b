"""The backend-agnostic runner: serves one backend over gRPC with grpc.health.v1, until SIGTERM.

    python -m runners.server --backend onnxruntime --listen unix:///tmp/r.sock   (or --listen 127.0.0.1:50051)
    python -m runners.server --backend onnxruntime --listen 0.0.0.0:50051 --tls-cert server.pem --tls-key server.key \
        --token-file token.txt        (a runner other hosts reach: TLS and a bearer token; see proto/speedster_run/shared/security.py)

A non-loopback TCP address without both TLS and a token is refused unless --insecure is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from speedster_run.shared import security
from speedster_run.shared.parent_death import die_with_parent
from runners.servicer import RunnerServicer
from speedster_run.runner.v1 import GRPC_OPTIONS, SERVICE_NAME
from speedster_run.runner.v1 import runner_pb2_grpc as pb_grpc

log = logging.getLogger("runners.server")

# RunnerService serves one call at a time and answers any other at once (busy, or unauthenticated), so a few threads
# are plenty; grpc.health.v1 has threads of its own, so that probes answer whatever RunnerService does.
RUNNER_WORKERS = 4
HEALTH_WORKERS = 2
# At SIGTERM, calls in progress get this long to finish; then the runner cleans up and exits without them.
STOP_GRACE_S = 1.0


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


class OwnThreadsHealthServicer(health.HealthServicer):
    """grpc.health.v1 answered on a thread pool of its own (grpc's per-handler `experimental_thread_pool`, which
    grpc_health itself uses for Watch): RunnerService calls that fill the server's pool cannot starve the probes."""

    def __init__(self, workers: int = HEALTH_WORKERS):
        pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health")
        super().__init__(experimental_thread_pool=pool)
        check = super().Check

        def on_own_threads(request, context):
            return check(request, context)

        on_own_threads.experimental_thread_pool = pool
        self.Check = on_own_threads


def make_server(servicer: RunnerServicer, health_servicer: health.HealthServicer, interceptors=(),
                pool: futures.ThreadPoolExecutor | None = None) -> grpc.Server:
    """The runner's gRPC server, not yet bound: RunnerService on `pool` (default: RUNNER_WORKERS threads), health
    on the health servicer's own threads."""
    pool = pool or futures.ThreadPoolExecutor(max_workers=RUNNER_WORKERS, thread_name_prefix="runner")
    server = grpc.server(pool, options=GRPC_OPTIONS, interceptors=list(interceptors))
    pb_grpc.add_RunnerServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server


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
    # Paths only over a unix socket (the local and docker sandboxes, on this host): TCP callers upload their models.
    servicer = RunnerServicer(backend_name, scratch, accept_paths=address.startswith("unix:"))
    health_servicer = OwnThreadsHealthServicer()
    server = make_server(servicer, health_servicer, [security.TokenInterceptor(sec.token)] if sec.token else [])
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
    stopped = [each.stop(grace=STOP_GRACE_S) for each in servers]  # past the grace, gRPC cancels what is left
    for event in stopped:
        event.wait(timeout=STOP_GRACE_S + 5)
    shutil.rmtree(scratch, ignore_errors=True)
    if servicer.serving is not None:
        # Its handler ignored the cancellation (a hung compile): the interpreter would wait for its thread forever.
        log.warning("%s still running %g s after the stop; exiting without it", servicer.serving, STOP_GRACE_S)
        logging.shutdown()
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    die_with_parent()  # first: a sandbox that died while this runner imported is noticed here, not orphaned
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
