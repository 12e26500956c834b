"""The CLI's progress lines: a step that runs long with nothing to say still shows that it is alive."""

from __future__ import annotations

import re
import time

from orchestrator.cli import Progress


def test_a_quiet_step_gets_a_still_running_line_and_a_chatty_one_does_not(capsys):
    progress = Progress(quiet_s=0.3)
    try:
        progress("[2/5] tvm/fp32: compiling")
        time.sleep(1.0)
        for index in range(5):  # a line every 0.1 s: never quiet for long enough
            progress(f"benchmark round 1/2: candidate {index + 1}/5")
            time.sleep(0.1)
    finally:
        progress.close()
    lines = capsys.readouterr().err.splitlines()
    ticks = [line for line in lines if "still running" in line]
    assert ticks and all(re.search(r"\] \.\.\. \[2/5\] tvm/fp32: compiling still running \(\d+ s\)$", t) for t in ticks)
    assert len(ticks) <= 4  # one per quiet_s of silence, not a flood
    assert lines[-1].endswith("benchmark round 1/2: candidate 5/5")  # none once lines come again


def test_closing_stops_the_ticker():
    progress = Progress(quiet_s=0.1)
    progress.close()
    assert not progress._ticker.is_alive()
