"""Fixtures of the remote-runner tests: certificates, a token file, and a TLS + token runner on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.e2e.remote.support import TOKEN, RemoteRunner, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "token.txt"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="module")
def tls_runner(pki, token_file, tmp_path_factory):
    """An onnxruntime runner serving TLS on 127.0.0.1 and requiring the token, in its own directory."""
    runner = RemoteRunner("onnxruntime", tmp_path_factory.mktemp("remote-home"),
                          "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                          "--token-file", str(token_file))
    try:
        runner.wait_serving(tls_ca=pki.ca)
        yield runner
    finally:
        runner.stop()
