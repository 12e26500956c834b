"""TLS and a bearer token for runners reached over TCP (remote hosts, compose services).

Server side: `server_credentials()` for grpc's add_secure_port and `TokenInterceptor`, which answers UNAUTHENTICATED
to any call without `authorization: Bearer <token>` metadata, before receiving its request. The grpc.health.v1 service stays open: it tells only
whether the runner serves, and load balancers, `docker-compose` healthchecks and the orchestrator's readiness probe
must be able to ask without a secret. Everything in RunnerService (Describe, uploads, compiles, inference) needs the
token. Tokens are compared in constant time (hmac.compare_digest).

Both sides: `read_token()` (a file, else the SPEEDSTER_RUN_TOKEN environment variable) and `is_loopback()`.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

import grpc

TOKEN_ENV = "SPEEDSTER_RUN_TOKEN"
AUTH_HEADER = "authorization"
# Open without a token: the readiness / liveness probe (no model, no data, no compute behind it).
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class SecurityConfigError(ValueError):
    """A TLS or token setting that cannot work (missing file, empty token)."""


def read_token(token_file: str | os.PathLike | None = None, environ: dict | None = None) -> str | None:
    """The token in `token_file` (whitespace stripped), else $SPEEDSTER_RUN_TOKEN; None if neither."""
    environ = os.environ if environ is None else environ
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as error:
            raise SecurityConfigError(f"cannot read token file {token_file}: {error.strerror or error}") from None
        if not token:
            raise SecurityConfigError(f"token file {token_file} is empty")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    return token or None


def read_bytes(path: str | os.PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SecurityConfigError(f"cannot read {what} {path}: {error.strerror or error}") from None


def split_host(address: str) -> str:
    """The host part of "host:port", "[v6]:port", "dns:///host:port" or "ipv4:host:port"; "" for a unix socket."""
    if address.startswith("unix:") or address.startswith("/"):
        return ""
    for prefix in ("dns:///", "ipv4:", "ipv6:"):
        if address.startswith(prefix):
            address = address[len(prefix):]
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, sep, _ = address.rpartition(":")
    return host if sep else address


def is_loopback(address: str) -> bool:
    """True for a unix socket, localhost, 127.0.0.0/8 and ::1; False for 0.0.0.0, [::], "" and every other host
    (a name other than localhost is not resolved: it counts as remote)."""
    if address.startswith("unix:") or address.startswith("/"):
        return True
    host = split_host(address)
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_credentials(cert: str | os.PathLike, key: str | os.PathLike,
                       client_ca: str | os.PathLike | None = None) -> grpc.ServerCredentials:
    """TLS with this certificate chain and key; with client_ca, clients must present a certificate it signed (mTLS)."""
    pair = [(read_bytes(key, "TLS key"), read_bytes(cert, "TLS certificate"))]
    if client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, root_certificates=read_bytes(client_ca, "client CA"),
                                       require_client_auth=True)


def token_matches(metadata, token: str) -> bool:
    """True when the call's metadata holds `authorization: Bearer <token>`; constant-time comparison."""
    expected = f"Bearer {token}".encode()
    for key, value in metadata or ():
        if key.lower() == AUTH_HEADER:
            given = value.encode() if isinstance(value, str) else bytes(value)
            if hmac.compare_digest(given, expected):
                return True
    return False


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler that aborts with UNAUTHENTICATED without receiving the request. It is request-streaming whatever
    the method is (the wire format is the same) and reads nothing: a unary handler would make gRPC receive and decode
    the whole message first (up to MAX_MESSAGE_BYTES) before the refusal. So an unauthenticated call costs the runner
    only what HTTP/2 flow control lets the peer send before the reset: a stream window, not the message."""

    def reject(request_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer <token>)")

    def reject_stream(request_iterator, context):
        reject(request_iterator, context)
        yield  # pragma: no cover - abort raises

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(reject_stream, None, handler.response_serializer)
    return grpc.stream_unary_rpc_method_handler(reject, None, handler.response_serializer)


class TokenInterceptor(grpc.ServerInterceptor):
    """Every method except those of OPEN_SERVICES needs `authorization: Bearer <token>`."""

    def __init__(self, token: str):
        if not token:
            raise SecurityConfigError("empty token")
        self._token = token

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        if token_matches(handler_call_details.invocation_metadata, self._token):
            return handler
        return _rejecting(handler)
