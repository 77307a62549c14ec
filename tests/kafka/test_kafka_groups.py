"""Consumer groups through the Kafka door, with real clients against a broker process.

KIP-848 (``group.protocol=consumer``) members and native ``clients.Consumer`` members are
members of one kind of group; classic members (JoinGroup/SyncGroup) share the coordinator
and ``__consumer_offsets``.  Every wait polls with a deadline.
"""

from __future__ import annotations

import time

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient

from clients import Admin, Consumer
from support import run_cli, wait_until

pytestmark = pytest.mark.timeout(120)


def create_topic(kbroker, name: str, partitions: int) -> None:
    with Admin(bootstrap=kbroker.bootstrap) as admin:
        admin.create_topic(name, partitions=partitions, replication_factor=1)


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


def test_a_kip848_group_is_shown_by_zbroker_groups_describe(kbroker):
    create_topic(kbroker, "shown", 3)
    kafka = kip848_consumer(kbroker, "shown-group", **{"client.id": "kip848-client"})
    try:
        kafka.subscribe(["shown"])
        wait_until(lambda: kafka.poll(0.05) is None and len(assigned(kafka)) == 3, 60, what="the assignment")
        out = run_cli("groups", "describe", "shown-group", bootstrap=kbroker.bootstrap)
        assert out.returncode == 0, out.stderr
        text = out.stdout.decode()
        assert "kip848-client" in text and "shown" in text
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
