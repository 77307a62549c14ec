"""The Kafka group handlers' pure mappings: names, ConsumerProtocol bytes, gather."""

import pytest

from zbroker.context import Completion
from zbroker.errors import ErrorCode, RequestError
from tests.unit.kio_consumer_protocol import decode_assignment, decode_subscription
from zbroker.frontends.kafka import groupmap


def test_kip848_assignor_names_map_to_the_coordinators_assignors():
    assert groupmap.coordinator_assignor("uniform") == "sticky"
    assert groupmap.coordinator_assignor("range") == "range"
    assert groupmap.coordinator_assignor("Uniform") == "sticky"
    assert groupmap.coordinator_assignor("round_robin") == "round_robin"
    assert groupmap.coordinator_assignor(None) is None  # unchanged since the last heartbeat
    assert groupmap.coordinator_assignor("") is None  # librdkafka: let the broker choose
    assert groupmap.coordinator_assignor("cooperative-sticky") == "cooperative-sticky"  # refused by the coordinator


def test_group_states_get_kafkas_names_and_filters_match_them_case_insensitively():
    assert [groupmap.kafka_state(s) for s in ("empty", "reconciling", "stable")] == ["Empty", "Reconciling", "Stable"]
    assert groupmap.kafka_state("preparing_rebalance") == "PreparingRebalance"
    assert groupmap.kafka_state("weird") == "Weird"
    assert groupmap.state_matches("stable", [])
    assert groupmap.state_matches("stable", ["STABLE", "Empty"])
    assert not groupmap.state_matches("empty", ["Stable"])


def test_consumer_protocol_bytes_are_kafkas_layout_and_read_back():
    data = groupmap.encode_assignment([("t", 1), ("a", 3), ("t", 0)])
    # INT16 version 0, 2 topics: "a" [3], "t" [0, 1], user_data null
    assert data == bytes.fromhex("0000" "00000002" "0001" "61" "00000001" "00000003"
                                 "0001" "74" "00000002" "00000000" "00000001" "ffffffff")
    assert decode_assignment(data) == [("a", 3), ("t", 0), ("t", 1)]
    sub = groupmap.encode_subscription(["y", "x"])
    assert sub == bytes.fromhex("0000" "00000002" "0001" "78" "0001" "79" "ffffffff")
    assert decode_subscription(sub) == ["x", "y"]
    assert decode_assignment(groupmap.encode_assignment([])) == []


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\xff\xff", b"\x00\x00\x00\x00\x00\x09\x00"])
def test_bytes_that_are_not_a_consumer_protocol_struct_raise_value_error(bad):
    with pytest.raises(ValueError):
        decode_assignment(bad)
    with pytest.raises(ValueError):
        decode_subscription(bad)


def test_group_by_topic_sorts_topics_and_partitions():
    assert groupmap.group_by_topic([("b", 2), ("a", 1), ("b", 0)]) == {"a": [1], "b": [0, 2]}


def test_gather_answers_at_once_without_completions_and_later_with_them():
    assert groupmap.gather([1, 2], lambda v: {"sum": sum(v)}) == {"sum": 3}
    first, second = Completion(), Completion()
    error = RequestError(ErrorCode.NOT_COORDINATOR, "moved")
    done = groupmap.gather([first, 5, groupmap.attempt(lambda: (_ for _ in ()).throw(error)), second],
                           lambda v: {"values": v})
    assert isinstance(done, Completion) and not done.done
    second.fail(RequestError(ErrorCode.NON_EMPTY_GROUP, "busy"))
    assert not done.done
    first.complete(1)
    assert done.value["values"][:3] == [1, 5, error]
    assert done.value["values"][3].code == ErrorCode.NON_EMPTY_GROUP
