"""scripts/fuzz.py in CI: 20,000 frames through both doors of a real broker process, then
the broker alive, its memory bounded and every well-formed request answered as before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240


@pytest.mark.timeout(TIMEOUT_S + 30)
def test_a_short_fuzz_run_leaves_the_broker_alive_and_answering_every_request():
    # its own session: a timeout kills the script and the broker it started alike
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--frames", "20000", "--seed", "7",
                             "--max-rss-mb", "512"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"scripts/fuzz.py did not finish in {TIMEOUT_S} s:\n{out[-5000:]}")
    print(out)
    assert proc.returncode == 0, out[-5000:]
    assert "broker alive: True" in out and "ERROR lines" in out and out.rstrip().endswith("PASS")
    sent = next(line for line in out.splitlines() if line.startswith("frames sent:"))
    assert int(sent.split()[2].replace(",", "")) >= 20_000
