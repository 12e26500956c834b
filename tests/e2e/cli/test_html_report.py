"""--html as a person meets it: a real run's page loaded by headless Chromium (Debian's package), which must render it
without a console message, with the latency plot drawn; a screenshot lands in the test's directory."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import FAST, cli, mlp_onnx

REQUIRE_ENV = "SPEEDSTER_RUN_REQUIRE_BROWSER"  # CI sets it: a missing Chromium fails instead of skipping
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--log-level=0", "--window-size=1200,1000"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"needs Chromium (apt-get install chromium) ({REQUIRE_ENV}=1)", pytrace=False)
        pytest.skip("needs Chromium (apt-get install chromium)")
    return found


def browse(page: Path, profile: Path, *action: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    return re.findall(r"CONSOLE[^\]]*\] (.*)", stderr)


def test_the_console_check_sees_a_console_error(tmp_path):
    """The check below would catch a broken page: Chromium's log shows what a page writes to its console."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('broken page')</script></body></html>")
    assert any("broken page" in m for m in console_messages(browse(page, tmp_path / "profile", "--dump-dom").stderr))


def test_the_html_report_renders_its_plot_without_console_messages(tmp_path, fake_backend_env):
    fake_backend_env("ok", "wrong")
    model = mlp_onnx(tmp_path / "mlp.onnx")
    page = tmp_path / "report.html"
    result = cli("--model", model, "--backends", "onnxruntime,fake", "--html", page, *FAST)
    assert result.returncode == 0, result.stderr

    dom = browse(page, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    plot = re.search(r'<svg id="latency-plot".*?</svg>', dom.stdout, re.S)
    assert plot is not None and len(re.findall("<circle", plot.group(0))) >= 20  # the raw samples
    assert "onnxruntime/fp32" in plot.group(0) and "(winner)" in plot.group(0) and "log scale" in plot.group(0)
    assert 'id="failures"' in dom.stdout and "fake/fp32-wrong" in dom.stdout and "accuracy" in dom.stdout
    assert re.search(r"\d\.\d+x \[\d", dom.stdout)  # a speedup with its interval

    screenshot = tmp_path / "report.png"
    shot = browse(page, tmp_path / "profile2", f"--screenshot={screenshot}")
    assert shot.returncode == 0 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000  # a rendered page, not an empty canvas
