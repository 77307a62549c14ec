"""Shared fixtures.  Integration tests get real broker processes on loopback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import BrokerProcess, RawClient  # noqa: E402


@pytest.fixture
def broker(tmp_path):
    """A running single-node broker; killed at the end of the test."""
    proc = BrokerProcess(tmp_path / "data")
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture
def raw(broker):
    """A raw wire-protocol client connected to ``broker``."""
    client = RawClient(broker.bootstrap)
    try:
        yield client
    finally:
        client.close()
