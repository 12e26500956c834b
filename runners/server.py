"""The backend-agnostic runner: serves one backend over gRPC with grpc.health.v1, until SIGTERM.

    python -m runners.server --backend onnxruntime --listen unix:///tmp/r.sock   (or --listen 127.0.0.1:50051)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import tempfile
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

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


def serve(backend_name: str, listen: str, workdir: Path | None = None) -> None:
    """Runs the runner until SIGTERM/SIGINT."""
    try:
        address = parse_listen(listen)
    except ValueError as error:
        raise SystemExit(f"runner: {error}") from None
    scratch = Path(tempfile.mkdtemp(prefix=f"runner-{backend_name}-", dir=workdir))
    servicer = RunnerServicer(backend_name, scratch)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=GRPC_OPTIONS)
    pb_grpc.add_RunnerServiceServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        bound: int | None = server.add_insecure_port(address)
    except RuntimeError:  # grpcio now raises where it used to return 0
        bound = None
    if bound is None or (bound == 0 and not address.startswith("unix:")):
        shutil.rmtree(scratch, ignore_errors=True)
        raise SystemExit(f"runner: cannot listen on {listen}")
    # Handlers before SERVING: a stop sent as soon as the runner is ready must still shut it down cleanly.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    # SERVING only after the probe: the orchestrator's readiness check means "Describe will answer at once".
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("runner %s listening on %s (available=%s)", backend_name, listen, servicer.availability.available)
    # Polled, not one blocking wait: a signal the kernel hands to one of gRPC's threads only runs its Python handler
    # when the main thread next executes bytecode, so an unbounded wait could ignore SIGTERM for good.
    while not stop.wait(timeout=0.2):
        pass
    server.stop(grace=1).wait()
    shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m runners.server", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, help="registered backend name")
    parser.add_argument("--listen", required=True, help="unix:///path.sock or host:port")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (default: system temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    serve(args.backend, args.listen, args.workdir)


if __name__ == "__main__":
    main()
