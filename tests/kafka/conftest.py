"""Fixtures for the Kafka front door's tests: real brokers, real Kafka clients.

Every test here talks to a broker process started by the test, through its Kafka
listener, with a real client: Debian's kcat, confluent-kafka (librdkafka), kafka-python,
aiokafka.  ``scripts/test.sh`` installs them all; a missing one fails the test (it is
never skipped: CI must run these).
"""

from __future__ import annotations

import pytest

from support import BrokerProcess


@pytest.fixture
def kbroker(tmp_path):
    """A single-node broker with a Kafka listener (``kbroker.kafka_bootstrap``)."""
    proc = BrokerProcess(tmp_path / "data")
    proc.start()
    try:
        yield proc
    finally:
        proc.close()
