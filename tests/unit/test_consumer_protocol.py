"""Reading Kafka's ConsumerProtocol bytes (classic members' subscriptions and assignments).

The bytes are written by kio's schemas, the same ones Kafka clients' payloads follow; garbage
gives an empty answer, never an exception.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, strategies as st
from kio.schema.consumer_protocol_assignment.v3.data import ConsumerProtocolAssignment, TopicPartition
from kio.schema.consumer_protocol_subscription.v3.data import ConsumerProtocolSubscription
from kio.serial import entity_writer

from zbroker.groups.consumer_protocol import assigned_partitions, subscribed_topics

pytestmark = pytest.mark.timeout(60)


def written(entity) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\0\x03")  # the version, which Kafka writes before the struct
    entity_writer(type(entity))(buf, entity)
    return buf.getvalue()


def test_an_assignment_reads_as_sorted_topic_partitions():
    data = written(ConsumerProtocolAssignment(
        assigned_partitions=(TopicPartition(topic="b", partitions=(2, 0)), TopicPartition(topic="a", partitions=(1,))),
        user_data=b"x"))
    assert assigned_partitions(data) == [("a", 1), ("b", 0), ("b", 2)]


def test_a_subscription_reads_as_its_topics():
    data = written(ConsumerProtocolSubscription(topics=("t2", "t1"), user_data=None, owned_partitions=(),
                                                generation_id=3, rack_id=None))
    assert subscribed_topics(data) == ["t1", "t2"]


@given(st.binary(max_size=64))
def test_garbage_reads_as_nothing_and_never_raises(data):
    assert isinstance(assigned_partitions(data), list)
    assert isinstance(subscribed_topics(data), list)


def test_a_huge_claimed_count_is_refused_without_allocating():
    assert assigned_partitions(b"\0\0\x7f\xff\xff\xff") == []
    assert subscribed_topics(b"\0\0\x7f\xff\xff\xff") == []
