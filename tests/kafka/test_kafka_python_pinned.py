"""kafka-python clients pinned to a Kafka release (``api_version=(4, 0)``, as kafka-python's
own integration suite pins them with ``KAFKA_VERSION``) bootstrap, produce and consume.

A client pinned below the version it identifies the broker as uses its static table of
that release, without the broker's ApiVersions: Kafka 4.0 and later serve Metadata v13
(KIP-1102's top-level ``error_code``), so the broker must too, or the client's first
Metadata request gets an answer it cannot decode and it never bootstraps.
"""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.timeout(90)

TIMEOUT_S = 20


@pytest.mark.parametrize("release", [(4, 0), (4, 1)])
def test_kafka_python_pinned_to_a_kafka_4_release_bootstraps_produces_and_consumes(kbroker, release):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    common = {"bootstrap_servers": kbroker.kafka_bootstrap, "api_version": release,
              "request_timeout_ms": TIMEOUT_S * 1000}
    admin = KafkaAdminClient(**common, bootstrap_timeout_ms=TIMEOUT_S * 1000)
    try:
        admin.create_topics([NewTopic("pinned", 2, 1)], wait_for_metadata=True)
        assert "pinned" in admin.list_topics()  # Metadata v13 for every topic
    finally:
        admin.close()
    producer = KafkaProducer(**common, acks="all", max_block_ms=TIMEOUT_S * 1000)
    try:
        futures = [producer.send("pinned", value=b"v%d" % i, partition=i % 2) for i in range(20)]
        producer.flush(TIMEOUT_S)
        assert all(f.get(TIMEOUT_S).offset >= 0 for f in futures)
    finally:
        producer.close(TIMEOUT_S)
    consumer = KafkaConsumer(**common, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition("pinned", 0), TopicPartition("pinned", 1)])
        consumer.seek_to_beginning()
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < 20 and time.monotonic() < deadline:
            for msgs in consumer.poll(500).values():
                got += [m.value for m in msgs]
    finally:
        consumer.close()
    assert sorted(got) == sorted(b"v%d" % i for i in range(20))
