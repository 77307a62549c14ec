"""Kafka groups on a 3-broker cluster: FindCoordinator sends clients to the broker that
leads the group's ``__consumer_offsets`` partition, at its Kafka address."""

from __future__ import annotations

import time

import confluent_kafka as ck
import pytest
from confluent_kafka import TopicPartition

from kafka_tools import kafka_request
from support import running_cluster, wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(tmp_path):
    yield from running_cluster(tmp_path / "c", replication_factor=3, min_insync_replicas=2, partitions=3, kafka=True)


def coordinator_of(cluster, group: str, via: int):
    """FindCoordinator v4 asked of broker ``via``: the coordinator's (node id, host, port)."""
    def found():
        answer = kafka_request(cluster.brokers[via].kafka_bootstrap, 10, 4, {"key_type": 0, "coordinator_keys": [group]})
        c = answer.coordinators[0]
        return c.error_code == 0 and (c.node_id, c.host, c.port)

    return wait_until(found, 30, interval=0.2, what=f"a coordinator for {group}")


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_group_coordinated_by_another_broker_consumes_and_commits(cluster, protocol):
    from clients import Admin, Producer

    with Admin(bootstrap=cluster.bootstrap, request_timeout_ms=20_000) as admin:
        admin.create_topic("ct", partitions=3, replication_factor=3)
    with Producer(bootstrap=cluster.bootstrap, acks="all") as producer:
        for i in range(30):
            producer.send("ct", value=b"%d" % i, partition=i % 3)
        producer.flush()
    via = min(cluster.brokers)
    # a group whose coordinator is not the broker the client starts from
    group = next(g for g in (f"group-{i}" for i in range(100)) if coordinator_of(cluster, g, via)[0] != via)
    node, host, port = coordinator_of(cluster, group, via)
    assert (host, port) == ("127.0.0.1", cluster.brokers[node].kafka_port)
    assert {coordinator_of(cluster, group, i)[0] for i in cluster.brokers} == {node}  # every broker says the same
    config = {"bootstrap.servers": cluster.brokers[via].kafka_bootstrap, "group.id": group, "group.protocol": protocol,
              "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumer = ck.Consumer(config)
    try:
        consumer.subscribe(["ct"])
        got, deadline = [], time.monotonic() + 90
        while len(got) < 30:
            assert time.monotonic() < deadline, f"read {len(got)} of 30"
            got += [m.value() for m in consumer.consume(100, 0.2) if m.error() is None]
        assert sorted(got) == sorted(b"%d" % i for i in range(30))
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    fresh = ck.Consumer({**config, "group.protocol": "classic"})
    try:
        offsets = fresh.committed([TopicPartition("ct", p) for p in range(3)], 20)
        assert {tp.partition: tp.offset for tp in offsets} == {0: 10, 1: 10, 2: 10}
    finally:
        fresh.close()


def test_a_kip848_member_carries_on_when_its_coordinator_is_killed(cluster):
    from clients import Admin, Producer

    with Admin(bootstrap=cluster.bootstrap, request_timeout_ms=20_000) as admin:
        admin.create_topic("ft", partitions=3, replication_factor=3)
    via = min(cluster.brokers)
    group = next(g for g in (f"fo-{i}" for i in range(100)) if coordinator_of(cluster, g, via)[0] != via)
    node = coordinator_of(cluster, group, via)[0]
    consumer = ck.Consumer({"bootstrap.servers": ",".join(b.kafka_bootstrap for b in cluster.brokers.values()),
                            "group.id": group, "group.protocol": "consumer", "auto.offset.reset": "earliest",
                            "enable.auto.commit": False})
    live = ",".join(b.bootstrap for i, b in cluster.brokers.items() if i != node)
    got = set()

    def read_until(n: int) -> None:
        deadline = time.monotonic() + 90
        while len(got) < n:
            assert time.monotonic() < deadline, f"read {len(got)} of {n}"
            got.update(m.value() for m in consumer.consume(100, 0.2) if m.error() is None)

    try:
        consumer.subscribe(["ft"])
        with Producer(bootstrap=cluster.bootstrap, acks="all") as producer:
            for i in range(30):
                producer.send("ft", value=b"%d" % i, partition=i % 3)
            producer.flush()
        read_until(30)
        cluster.brokers[node].kill()
        wait_until(lambda: coordinator_of(cluster, group, via)[0] != node, 60, what="a new coordinator")
        with Producer(bootstrap=live, acks="all") as producer:
            for i in range(30, 60):
                producer.send("ft", value=b"%d" % i, partition=i % 3)
            producer.flush()
        read_until(60)
        assert got == {b"%d" % i for i in range(60)} and len(consumer.assignment()) == 3
        consumer.commit(asynchronous=False)  # the new coordinator knows the member and its epoch
        assert {tp.partition: tp.offset for tp in consumer.committed([TopicPartition("ft", p) for p in range(3)], 20)} == \
            {0: 20, 1: 20, 2: 20}
    finally:
        consumer.close()
