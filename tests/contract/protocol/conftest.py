"""Fixtures for the protocol tests: live runners (in this process, real gRPC) and model files."""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # SPEEDSTER_RUN_BACKENDS names "tests.fakes..." and "tests.contract.protocol..." modules
    sys.path.insert(0, str(REPO))

from tests.contract.protocol.support import live_runner  # noqa: E402


@pytest.fixture(scope="module")
def ort_runner():
    with live_runner("onnxruntime") as runner:
        yield runner


@pytest.fixture(scope="module")
def fake_runner():
    with live_runner("fake") as runner:
        yield runner


@pytest.fixture(scope="module")
def echo_runner():
    with live_runner("echo") as runner:
        yield runner


@pytest.fixture(scope="module")
def model_dir():
    directory = Path(tempfile.mkdtemp(prefix="sr-models-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _no_core_dumps():
    """Runners are crashed on purpose (SIGSEGV, SIGABRT): no core files in the working tree."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


