"""docs/kafka.md lists every API the Kafka door serves, with the versions the router serves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zbroker.frontends.kafka.handlers import ROUTES

pytestmark = pytest.mark.timeout(30)

DOC = Path(__file__).resolve().parents[2] / "docs" / "kafka.md"


def documented() -> dict[int, tuple[str, int, int]]:
    """``| Name | key | vLO-vHI | ... |`` rows of the API table."""
    rows = {}
    for match in re.finditer(r"^\| (\w+) \| (\d+) \| v(\d+)[-–]v(\d+) \|", DOC.read_text(), re.M):
        rows[int(match[2])] = (match[1], int(match[3]), int(match[4]))
    return rows


def test_every_api_served_is_documented_with_its_versions_and_nothing_else():
    served = {r.api_key: (r.name, *r.versions) for r in ROUTES}
    assert documented() == served
