"""Quotas through the Kafka door, with real clients and raw requests against a broker process:
throttle times in Produce and Fetch answers (KIP-219), every acknowledged record readable,
and DescribeClientQuotas / AlterClientQuotas (KIP-546).  No timed assertions: what is checked
is what the answers report and the data."""

from __future__ import annotations

import logging
import time

import pytest

from clients import Admin
from kafka_tools import kafka_request
from storage import build_kafka_batch
from support import running_broker

pytestmark = pytest.mark.timeout(180)

MAX_THROTTLE_MS = 1000


@pytest.fixture
def qbroker(tmp_path):
    yield from running_broker(tmp_path, f"[cluster]\nquota_max_throttle_ms = {MAX_THROTTLE_MS}\n\n[[broker]]\nid = 1\n")


def alter_quotas(bootstrap: str, *entries) -> list:
    """AlterClientQuotas v1 of ``(user name or None, {key: value or None})`` entries; their error codes."""
    body = {"validate_only": False, "entries": [
        {"entity": [{"entity_type": "user", "entity_name": name}],
         "ops": [{"key": k, "value": float(v or 0), "remove": v is None} for k, v in ops.items()]}
        for name, ops in entries]}
    return [e.error_code.value for e in kafka_request(bootstrap, 49, 1, body).entries]


def describe_quotas(bootstrap: str) -> dict:
    answer = kafka_request(bootstrap, 48, 1, {"components": [], "strict": False})
    assert answer.error_code.value == 0
    return {e.entity[0].entity_name: {v.key: v.value for v in e.values} for e in answer.entries}


def test_kafka_admin_requests_set_describe_and_remove_user_quotas(qbroker):
    boot = qbroker.kafka_bootstrap
    assert alter_quotas(boot, (None, {"producer_byte_rate": 1024}), ("app", {"consumer_byte_rate": 2048})) == [0, 0]
    assert describe_quotas(boot) == {None: {"producer_byte_rate": 1024.0}, "app": {"consumer_byte_rate": 2048.0}}
    with Admin(qbroker.bootstrap) as admin:  # the same records as the native door's
        assert [(q.principal, q.produce_bytes_per_s, q.fetch_bytes_per_s) for q in admin.list_quotas()] == [
            ("<default>", 1024.0, None), ("User:app", None, 2048.0)]
    assert alter_quotas(boot, ("app", {"consumer_byte_rate": None}), ("x", {"request_percentage": 5})) == [0, 42]
    assert describe_quotas(boot) == {None: {"producer_byte_rate": 1024.0}}


def test_a_confluent_producer_over_its_quota_is_throttled_and_every_record_is_readable(qbroker):
    from confluent_kafka import Consumer, Producer, TopicPartition

    boot = qbroker.kafka_bootstrap
    with Admin(qbroker.bootstrap) as admin:
        admin.create_topic("cq", partitions=1)
    assert alter_quotas(boot, (None, {"producer_byte_rate": 1000})) == [0]  # past 10 KB in 10 s: throttled
    throttles = []
    producer = Producer({"bootstrap.servers": boot, "linger.ms": 0, "message.timeout.ms": 60000,
                         "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    values = [b"%05d" % i + b"c" * 2000 for i in range(20)]
    delivered, failed = [], []
    for v in values:
        producer.produce("cq", value=v, on_delivery=lambda err, msg: (failed if err else delivered).append(err or msg.offset()))
        producer.poll(0)
    assert producer.flush(60) == 0
    producer.poll(0)  # serves the throttle callbacks still queued
    assert not failed and sorted(delivered) == list(range(20))
    assert throttles and max(throttles) > 0 and max(throttles) <= MAX_THROTTLE_MS / 1000

    consumer = Consumer({"bootstrap.servers": boot, "group.id": "unused", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("cq", 0, 0)])
        got, deadline = [], time.monotonic() + 60
        while len(got) < 20 and time.monotonic() < deadline:
            got += [m.value() for m in consumer.consume(100, 1.0) if m.error() is None]
    finally:
        consumer.close()
    assert got == values


def test_a_kafka_python_consumer_over_its_fetch_quota_is_throttled_and_reads_everything(qbroker, caplog):
    from kafka import KafkaConsumer, TopicPartition

    boot = qbroker.kafka_bootstrap
    with Admin(qbroker.bootstrap) as admin:
        admin.create_topic("kq", partitions=1)
    batch = build_kafka_batch([(0, None, b"%05d" % i + b"k" * 3000, []) for i in range(20)])
    produced = kafka_request(boot, 0, 8, {"acks": 1, "timeout": 5000, "topic_data": [
        {"name": "kq", "partition_data": [{"index": 0, "records": batch}]}]})
    assert produced.responses[0].partition_responses[0].error_code.value == 0
    # 60 KB in one batch against 3000 B/s (30 KB in the 10 s window): the fetch that reads it
    # takes the principal over its quota (it keeps its records); a fetch within the next 11 s
    # (until the sample leaves the window) finds it over already
    assert alter_quotas(boot, ("ANONYMOUS", {"consumer_byte_rate": 3000})) == [0]  # security off: everyone

    consumer = KafkaConsumer(bootstrap_servers=boot, enable_auto_commit=False)
    got = []
    try:
        with caplog.at_level(logging.WARNING, logger="kafka"):
            consumer.assign([TopicPartition("kq", 0)])
            consumer.seek_to_beginning()
            deadline = time.monotonic() + 90
            while len(got) < 20 and time.monotonic() < deadline:
                for msgs in consumer.poll(1000).values():
                    got += [m.value for m in msgs]
    finally:
        consumer.close()
    assert got == [b"%05d" % i + b"k" * 3000 for i in range(20)]

    raw = kafka_request(boot, 1, 11, {"replica_id": -1, "max_wait": 0, "min_bytes": 1, "max_bytes": 1 << 20, "session_epoch": -1,
                                      "topics": [{"topic": "kq", "partitions": [{"partition": 0, "fetch_offset": 0,
                                                                                 "partition_max_bytes": 1 << 20,
                                                                                 "current_leader_epoch": -1}]}]})
    assert raw.throttle_time.total_seconds() * 1000 > 0 and not raw.responses[0].partitions[0].records  # Kafka's rule
    assert raw.responses[0].partitions[0].high_watermark == 20
    assert any("throttled by broker" in r.getMessage() for r in caplog.records)
