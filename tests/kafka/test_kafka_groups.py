"""Consumer groups through the Kafka door, with real clients against a broker process.

KIP-848 (``group.protocol=consumer``) members and native ``clients.Consumer`` members are
members of one kind of group; classic members (JoinGroup/SyncGroup) share the coordinator
and ``__consumer_offsets``.  Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import time

import confluent_kafka as ck
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from clients import Admin, Consumer, Producer
from kafka_tools import kcat
from support import run_cli, wait_until

pytestmark = pytest.mark.timeout(120)


def create_topic(kbroker, name: str, partitions: int) -> None:
    with Admin(bootstrap=kbroker.bootstrap) as admin:
        admin.create_topic(name, partitions=partitions, replication_factor=1)


def produce(kbroker, topic: str, partitions: int, per_partition: int) -> set[bytes]:
    """Records ``p<partition>-<i>`` on every partition, through the native door; their values."""
    values = set()
    with Producer(bootstrap=kbroker.bootstrap, acks="all") as producer:
        for p in range(partitions):
            for i in range(per_partition):
                value = b"p%d-%d" % (p, i)
                producer.send(topic, value=value, key=b"k%d" % i, partition=p)
                values.add(value)
        producer.flush()
    return values


def classic_consumer(kbroker, group: str, **config) -> ck.Consumer:
    """A librdkafka consumer of the classic protocol (its default)."""
    return ck.Consumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500, **config})


def read_all(consumer: ck.Consumer, expected: set[bytes], timeout: float = 60) -> list[bytes]:
    """Poll until every value of ``expected`` was read; the values read, in order."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not expected <= set(got):
        assert time.monotonic() < deadline, f"read {len(set(got))} of {len(expected)} records"
        for msg in consumer.consume(100, 0.2):
            assert msg.error() is None, msg.error()
            got.append(msg.value())
    return got


def committed(kbroker, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, asked by a fresh confluent consumer of the group."""
    fresh = classic_consumer(kbroker, group)
    try:
        return {tp.partition: tp.offset for tp in fresh.committed([TopicPartition(topic, p) for p in range(partitions)], 10)}
    finally:
        fresh.close()


def kip848_consumer(kbroker, group: str, **config) -> ck.Consumer:
    """A librdkafka consumer of the KIP-848 protocol (``group.protocol=consumer``)."""
    return ck.Consumer({"bootstrap.servers": kbroker.kafka_bootstrap, "group.id": group, "group.protocol": "consumer",
                        "auto.offset.reset": "earliest", **config})


def assigned(consumer: ck.Consumer) -> set[tuple[str, int]]:
    return {(tp.topic, tp.partition) for tp in consumer.assignment()}


def test_a_native_consumer_and_a_kip848_librdkafka_consumer_split_one_group(kbroker):
    create_topic(kbroker, "shared", 4)
    every = {("shared", p) for p in range(4)}
    native = Consumer("shared", group="mixed", bootstrap=kbroker.bootstrap)
    kafka = kip848_consumer(kbroker, "mixed")
    try:
        kafka.subscribe(["shared"])

        def split():
            native.poll(timeout_ms=50)
            kafka.poll(0.05)
            mine, theirs = {(tp.topic, tp.partition) for tp in native.assignment()}, assigned(kafka)
            return mine and theirs and not mine & theirs and mine | theirs == every and (mine, theirs)

        mine, theirs = wait_until(split, 60, what="the native and the librdkafka member to split the partitions")
        assert len(mine) == len(theirs) == 2
        values = produce(kbroker, "shared", 4, 5)  # each member reads its own partitions' records
        native_read, kafka_read = [], []

        def read_both():
            native_read.extend((r.partition, r.value) for r in native.poll(timeout_ms=50))
            kafka_read.extend((m.partition(), m.value()) for m in kafka.consume(100, 0.05) if m.error() is None)
            return {v for _p, v in native_read + kafka_read} == values

        wait_until(read_both, 60, what="both members to read their partitions")
        assert {("shared", p) for p, _v in native_read} == mine and {("shared", p) for p, _v in kafka_read} == theirs
        assert len(native_read) + len(kafka_read) == len(values)
        with Admin(bootstrap=kbroker.bootstrap) as admin:
            members = {m.member_id: set(m.assignment) for m in admin.describe_group("mixed").members}
        assert sorted(map(len, members.values())) == [2, 2]
        # the librdkafka member leaves: the native one gets every partition
        kafka.close()
        kafka = None
        wait_until(lambda: native.poll(timeout_ms=50) is not None and {(tp.topic, tp.partition) for tp in native.assignment()} == every,
                   60, what="the native member to take every partition")
    finally:
        if kafka is not None:
            kafka.close()
        native.close()


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_a_kafka_group_is_shown_by_zbroker_groups_describe(kbroker, protocol):
    create_topic(kbroker, "shown", 3)
    config = {"client.id": f"{protocol}-client", "enable.auto.commit": False}
    kafka = kip848_consumer(kbroker, "shown-group", **config) if protocol == "consumer" else \
        classic_consumer(kbroker, "shown-group", **config)
    try:
        kafka.subscribe(["shown"])
        wait_until(lambda: kafka.poll(0.05) is None and len(assigned(kafka)) == 3, 60, what="the assignment")
        kafka.commit(offsets=[TopicPartition("shown", 1, 0)], asynchronous=False)
        out = run_cli("groups", "describe", "shown-group", bootstrap=kbroker.bootstrap)
        assert out.returncode == 0, out.stderr
        text = out.stdout.decode()
        assert f"{protocol}-client" in text and "shown" in text and "Stable" in text.title()
        # a classic member's assignment bytes (Kafka's ConsumerProtocol) are shown as partitions too
        members = Admin(bootstrap=kbroker.bootstrap).describe_group("shown-group").members
        assert sorted(tuple(tp) for m in members for tp in m.assignment) == [("shown", 0), ("shown", 1), ("shown", 2)]
        listed = run_cli("groups", "list", bootstrap=kbroker.bootstrap)
        assert "shown-group" in listed.stdout.decode().split()
    finally:
        kafka.close()


def test_kafka_admin_lists_and_describes_a_kip848_group(kbroker):
    create_topic(kbroker, "admin-t", 2)
    admin = AdminClient({"bootstrap.servers": kbroker.kafka_bootstrap})
    kafka = kip848_consumer(kbroker, "admin-g")
    try:
        kafka.subscribe(["admin-t"])
        wait_until(lambda: kafka.poll(0.05) is None and len(assigned(kafka)) == 2, 60, what="the assignment")
        listed = admin.list_consumer_groups(request_timeout=10).result()
        assert "admin-g" in {g.group_id for g in listed.valid}
        described = admin.describe_consumer_groups(["admin-g"], request_timeout=10)["admin-g"].result()
        assert {(tp.topic, tp.partition) for m in described.members for tp in m.assignment.topic_partitions} == \
            {("admin-t", 0), ("admin-t", 1)}
    finally:
        kafka.close()
    deadline = time.monotonic() + 30
    while True:  # the member's leave is written before the group counts as empty
        result = admin.delete_consumer_groups(["admin-g"], request_timeout=10)["admin-g"]
        try:
            result.result()
            break
        except ck.KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- reading and committing, each client -------------------------------------------------------


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_confluent_subscribes_reads_all_commits_and_a_fresh_consumer_sees_the_commit(kbroker, protocol):
    create_topic(kbroker, f"commit-{protocol}", 3)
    topic = f"commit-{protocol}"
    values = produce(kbroker, topic, 3, 20)
    config = {"enable.auto.commit": False}
    consumer = kip848_consumer(kbroker, "g", **config) if protocol == "consumer" else classic_consumer(kbroker, "g", **config)
    try:
        consumer.subscribe([topic])
        got = read_all(consumer, values)
        assert sorted(got) == sorted(values)  # every record once
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert committed(kbroker, "g", topic, 3) == {0: 20, 1: 20, 2: 20}
    again = classic_consumer(kbroker, "g") if protocol == "classic" else kip848_consumer(kbroker, "g")
    try:  # the group starts where it committed: nothing is read again
        again.subscribe([topic])
        wait_until(lambda: again.poll(0.1) is None and len(again.assignment()) == 3, 60, what="the assignment")
        assert [m for m in again.consume(100, 1.0) if m.error() is None] == []
    finally:
        again.close()


def test_kcat_balanced_consumer_reads_the_topic_and_commits(kbroker):
    create_topic(kbroker, "kc", 2)
    values = produce(kbroker, "kc", 2, 5)
    out = kcat(kbroker.kafka_bootstrap, "-G", "kcat-group", "kc", "-c", "10", "-f", "%s\n",
               "-X", "auto.offset.reset=earliest", timeout=60)
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == values
    assert wait_until(lambda: committed(kbroker, "kcat-group", "kc", 2) == {0: 5, 1: 5}, 30, interval=0.5,
                      what="kcat's commit")


def test_two_classic_confluent_consumers_split_the_partitions_and_one_takes_all_when_the_other_leaves(kbroker):
    create_topic(kbroker, "split", 4)
    every = {("split", p) for p in range(4)}
    first, second = classic_consumer(kbroker, "pair"), classic_consumer(kbroker, "pair")
    try:
        first.subscribe(["split"])
        second.subscribe(["split"])

        def split():
            first.poll(0.05)
            second.poll(0.05)
            a, b = assigned(first), assigned(second)
            return a and b and not a & b and a | b == every

        wait_until(split, 60, what="the two members to split the partitions")
        second.close()
        second = None
        wait_until(lambda: first.poll(0.05) is None and assigned(first) == every, 60, what="the one left to take all")
        values = produce(kbroker, "split", 4, 5)
        assert set(read_all(first, values)) == values
    finally:
        first.close()
        if second is not None:
            second.close()


def test_a_classic_member_joining_a_kip848_group_is_told_inconsistent_group_protocol(kbroker):
    create_topic(kbroker, "mixed-protocols", 2)
    modern = kip848_consumer(kbroker, "kip848-only")
    classic = classic_consumer(kbroker, "kip848-only")
    try:
        modern.subscribe(["mixed-protocols"])
        wait_until(lambda: modern.poll(0.05) is None and len(assigned(modern)) == 2, 60, what="the KIP-848 member")
        classic.subscribe(["mixed-protocols"])

        def refused():
            msg = classic.poll(0.2)
            modern.poll(0)
            return msg is not None and msg.error() is not None and msg.error()

        error = wait_until(refused, 30, what="the classic member's error")
        assert error.code() == ck.KafkaError.INCONSISTENT_GROUP_PROTOCOL, error
        assert assigned(classic) == set() and len(assigned(modern)) == 2
    finally:
        classic.close()
        modern.close()


def test_kafka_python_consumer_reads_all_in_a_group_and_commits(kbroker):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    create_topic(kbroker, "kp", 2)
    values = produce(kbroker, "kp", 2, 10)
    consumer = KafkaConsumer("kp", group_id="kp-group", bootstrap_servers=kbroker.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        got, deadline = [], time.monotonic() + 60
        while set(got) != values and time.monotonic() < deadline:
            got += [m.value for m in consumer]  # ends after a second without records
        assert sorted(got) == sorted(values)
        consumer.commit()
        assert {p: consumer.committed(KTopicPartition("kp", p)) for p in (0, 1)} == {0: 10, 1: 10}
    finally:
        consumer.close()
    assert committed(kbroker, "kp-group", "kp", 2) == {0: 10, 1: 10}


def test_aiokafka_consumer_reads_all_in_a_group_and_commits(kbroker):
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATopicPartition

    create_topic(kbroker, "ak", 2)
    values = produce(kbroker, "ak", 2, 10)

    async def run():
        consumer = AIOKafkaConsumer("ak", group_id="ak-group", bootstrap_servers=kbroker.kafka_bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            got = []
            while set(got) != values:
                for msgs in (await consumer.getmany(timeout_ms=500)).values():
                    got += [m.value for m in msgs]
            await consumer.commit()
            return got, {p: await consumer.committed(ATopicPartition("ak", p)) for p in (0, 1)}
        finally:
            await consumer.stop()

    got, offsets = asyncio.run(asyncio.wait_for(run(), 60))
    assert sorted(got) == sorted(values) and offsets == {0: 10, 1: 10}
    assert committed(kbroker, "ak-group", "ak", 2) == {0: 10, 1: 10}


def test_a_transactional_producer_is_told_transactions_are_not_supported(kbroker):
    # FindCoordinator names a transaction coordinator, whose InitProducerId refuses the id:
    # the clients report that refusal, not a timeout of retried FindCoordinators
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    producer = ck.Producer({"bootstrap.servers": kbroker.kafka_bootstrap, "transactional.id": "tx"})
    with pytest.raises(ck.KafkaException) as info:
        producer.init_transactions(5)
    assert info.value.args[0].code() == ck.KafkaError.INVALID_TXN_STATE
    del producer  # destroyed now, while the broker runs (close() would try to abort a transaction)
    started = time.monotonic()
    with pytest.raises(KafkaError, match="InvalidTxnState"):
        KafkaProducer(bootstrap_servers=kbroker.kafka_bootstrap, transactional_id="tx", max_block_ms=30000).init_transactions()
    assert time.monotonic() - started < 20


def test_a_kip848_regex_subscription_gets_the_matching_topics(kbroker):
    create_topic(kbroker, "rx-a", 2)
    create_topic(kbroker, "rx-b", 1)
    create_topic(kbroker, "other", 1)
    kafka = kip848_consumer(kbroker, "regex-group")
    try:
        kafka.subscribe(["^rx-.*"])  # librdkafka sends it as subscribed_topic_regex
        wait_until(lambda: kafka.poll(0.05) is None and assigned(kafka) == {("rx-a", 0), ("rx-a", 1), ("rx-b", 0)}, 60,
                   what="the topics the regex matches")
    finally:
        kafka.close()
