"""Shared by the remote-runner tests: a throw-away PKI (CA, server and client certificates) made with `cryptography`,
free TCP ports, and runners started as separate processes listening on TCP, the way an operator starts them."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.runner_client import wait_until_serving

REPO = Path(__file__).resolve().parents[3]
TOKEN = "s3cret-token-for-tests"


@dataclasses.dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: trusting it must fail


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, cert=None, key=None) -> Path:
    from cryptography.hazmat.primitives import serialization

    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def _ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca_cert, ca_key, name: str, server: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName("runner.test"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _ca("speedster-run test CA")
    server_cert, server_key = _leaf(ca_cert, ca_key, "localhost", server=True)
    client_cert, client_key = _leaf(ca_cert, ca_key, "orchestrator", server=False)
    other_cert, _ = _ca("unrelated CA")
    return Pki(ca=_write(directory / "ca.pem", ca_cert), server_cert=_write(directory / "server.pem", server_cert),
               server_key=_write(directory / "server.key", key=server_key),
               client_cert=_write(directory / "client.pem", client_cert),
               client_key=_write(directory / "client.key", key=client_key),
               other_ca=_write(directory / "other-ca.pem", other_cert))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def runner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SPEEDSTER_RUN_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(REPO / "proto"), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class RemoteRunner:
    """`python -m runners.server` in its own process, working directory and scratch directory (never the test's)."""

    def __init__(self, backend: str, home: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.home = home
        self.workdir = home / "scratch"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = home / "runner.log"
        self.command = [sys.executable, "-m", "runners.server", "--backend", backend, "--listen", self.address,
                        "--workdir", str(self.workdir), *args]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            env=env or runner_env(), start_new_session=True)

    def wait_serving(self, timeout_s: float = 60.0, **security) -> None:
        deadline = time.monotonic() + timeout_s
        while not wait_until_serving(self.address, 1.0, **security):
            assert self.process.poll() is None, f"runner exited: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"runner not serving: {self.log.read_text()}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def scratch(self) -> Path:
        """The runner's own scratch directory (runner-<backend>-XXXX under --workdir)."""
        (found,) = self.workdir.iterdir()
        return found

    def stop(self, grace_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:  # a runner stuck in a call may not exit on SIGTERM
                self.process.kill()
                self.process.wait()
