"""A bounded run of scripts/jepsen.py: acknowledged writes survive kill -9, SIGSTOP and restarts.

The full check (20 rounds, several seeds) is run by hand: `python scripts/jepsen.py --seed N --rounds 20`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import jepsen  # noqa: E402


@pytest.mark.timeout(300)
def test_no_anomalies_under_a_seeded_nemesis(tmp_path):
    result = jepsen.run(seed=7, rounds=4, producers=2, rate=300, root=tmp_path)
    print(jepsen.summary(result))
    assert result["faults"] == 4 and result["acked"] > 0
    assert result["anomalies"] == {"lost": 0, "duplicate": 0, "reordered": 0, "offset_conflict": 0, "divergent": 0}, (
        jepsen.summary(result), result["fault_list"])
