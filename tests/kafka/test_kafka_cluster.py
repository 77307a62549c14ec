"""The Kafka door on a 3-broker cluster: a partition this broker does not lead, and a
confluent-kafka producer that keeps producing across a kill -9 of the partition's leader."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from kafka_tools import kafka_request
from storage import build_kafka_batch
from support import ClusterProcesses, running_cluster, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path / "c", replication_factor=3, min_insync_replicas=2, replica_lag_ms=1500, partitions=1,
                               kafka=True)


def partition_meta(c: ClusterProcesses, topic: str, via: int) -> dict | None:
    meta = c.metadata(via) if c.brokers[via].alive() else None
    for t in (meta or {}).get("topics", ()):
        if t["topic"] == topic and t["partitions"]:
            return t["partitions"][0]
    return None


def create(c: ClusterProcesses, topic: str) -> int:
    """Create ``topic`` (one partition on all three brokers); its leader once every live
    broker agrees on it and the ISR is full."""
    from clients import Admin

    with Admin(bootstrap=c.bootstrap, request_timeout_ms=20_000) as admin:
        admin.create_topic(topic, partitions=1, replication_factor=3)

    def agreed():
        seen = [partition_meta(c, topic, i) for i in c.brokers]
        leaders = {p["leader"] for p in seen if p}
        return len(leaders) == 1 and all(p and len(p["isr"]) == 3 for p in seen) and leaders.pop()

    return wait_until(agreed, timeout=20, what=f"every broker to agree on the leader of {topic}")


def test_a_produce_to_a_broker_that_does_not_lead_gets_not_leader_and_a_client_finds_the_leader(cluster):
    leader = create(cluster, "nl")
    other = next(i for i in cluster.brokers if i != leader)
    fields = {"acks": -1, "timeout": 5000, "topic_data": [{"name": "nl", "partition_data": [
        {"index": 0, "records": build_kafka_batch([(int(time.time() * 1000), None, b"v", [])])}]}]}
    response = kafka_request(cluster.brokers[other].kafka_bootstrap, 0, 10, fields)
    p = response.responses[0].partition_responses[0]
    assert (int(p.error_code), p.base_offset) == (6, -1)  # NOT_LEADER_OR_FOLLOWER
    assert p.current_leader.leader_id == leader  # KIP-951: where to go
    assert [n.port for n in response.node_endpoints] == [cluster.brokers[leader].kafka_port]
    assert int(kafka_request(cluster.brokers[leader].kafka_bootstrap, 0, 10, fields).responses[0]
               .partition_responses[0].error_code) == 0

    from confluent_kafka import Producer

    delivered = []
    producer = Producer({"bootstrap.servers": cluster.brokers[other].kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True})
    for i in range(100):
        producer.produce("nl", b"m%d" % i, on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
    assert producer.flush(30) == 0
    assert [err for err, _ in delivered] == [None] * 100 and [o for _, o in delivered] == list(range(1, 101))


def test_kill_9_of_the_leader_while_an_acks_all_producer_streams_every_acknowledged_record_is_read_once(cluster):
    from confluent_kafka import Consumer, Producer, TopicPartition

    leader = create(cluster, "ha")
    acked, failed = [], []
    stop = threading.Event()

    def report(err, msg):
        (failed if err is not None else acked).append((msg.value(), err or msg.offset()))

    def stream():
        producer = Producer({"bootstrap.servers": cluster.kafka_bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 2, "message.timeout.ms": 60000, "retry.backoff.ms": 50,
                             "topic.metadata.refresh.interval.ms": 1000})
        i = 0
        while not stop.is_set():  # about 2,000 records/s: a stream, not a flood to read back
            try:
                producer.produce("ha", b"m%07d" % i, on_delivery=report)
                i += 1
            except BufferError:
                pass
            producer.poll(0.01 if i % 20 == 0 else 0)
        producer.flush(90)

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        wait_until(lambda: len(acked) >= 2000, timeout=30, what="2000 acknowledged records")
        before = len(acked)
        cluster.brokers[leader].kill()
        survivors = [i for i in cluster.brokers if i != leader]
        new_leader = wait_until(lambda: (p := partition_meta(cluster, "ha", survivors[0])) and p["leader"] in survivors
                                and p["leader"], timeout=30, what="a new leader")
        # the producer follows it: records sent after the kill are acknowledged too
        wait_until(lambda: len(acked) >= before + 2000, timeout=60, what="2000 more acknowledged records after the kill")
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive()
    assert not failed, failed[:5]

    consumer = Consumer({"bootstrap.servers": cluster.brokers[new_leader].kafka_bootstrap, "group.id": "unused",
                         "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition("ha", 0), timeout=10)
        assert low == 0 and high >= len(acked)
        consumer.assign([TopicPartition("ha", 0, 0)])
        seen, deadline = [], time.monotonic() + 60
        while len(seen) < high and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 1.0):
                assert msg.error() is None, msg.error()
                seen.append((msg.value(), msg.offset()))
    finally:
        consumer.close()
    counts = collections.Counter(value for value, _ in seen)
    assert [o for _, o in seen] == list(range(high))
    assert all(counts[value] == 1 for value, _ in acked), [v for v, _ in acked if counts[v] != 1][:5]
    assert max(counts.values()) == 1  # idempotence: not even an unacknowledged record twice
    assert {value: offset for value, offset in seen if value in dict(acked)} == dict(acked)
