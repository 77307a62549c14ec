"""Fixtures for the Kafka front door's tests: real brokers, real Kafka clients.

Every test here talks to a broker process started by the test, through its Kafka
listener, with a real client: Debian's kcat, confluent-kafka (librdkafka), kafka-python,
aiokafka, quixstreams.  ``scripts/test.sh`` installs them all; a missing one fails the
test (it is never skipped: CI must run these).
"""

from __future__ import annotations

import pytest


@pytest.fixture
def kbroker(broker):
    """A single-node broker (tests/conftest.py's ``broker``); Kafka clients connect to
    ``kbroker.kafka_bootstrap``."""
    return broker
