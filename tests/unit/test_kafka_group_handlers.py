"""The Kafka group handlers against an App on one node: kio requests in, wire bytes out.

Each request is built as kio's dataclass of its version, run through the handler's route
(a RequestError becomes the route's error answer, as the router does), encoded in that
version and decoded back with kio, so the answers are checked as a client reads them.
"""

import uuid

import pytest
from kio.serial import entity_reader

from tests.unit.servicefakes import START_MS, RecordingPeers, create_topic
from zbroker.app import App
from zbroker.config import single_node_config
from zbroker.context import Completion, RequestContext
from zbroker.errors import ErrorCode, RequestError
from tests.unit.kio_consumer_protocol import decode_assignment, decode_subscription
from zbroker.frontends.kafka import codec, groupmap
from zbroker.frontends.kafka.handlers import (consumer_group_heartbeat, delete_groups, describe_groups,
                                              find_coordinator, heartbeat, join_group, leave_group, list_groups, metadata,
                                              offset_commit, offset_fetch, sync_group)

NOW = START_MS
CTX = RequestContext(listener="kafka", client_id="rdkafka")
KAFKA = ("127.0.0.1", 9092)


def ask(app, module, version, now=NOW, **fields):
    """Run one request through ``module``'s route; the response as kio decodes it."""
    request = codec.build(codec.request_schema(module.API_KEY, version), fields)
    try:
        answer = module.ROUTE.call(app, CTX, request, version, now)
    except RequestError as exc:
        answer = module.ROUTE.error(request, version, exc.code, exc.message)
    if isinstance(answer, Completion):
        assert answer.done, "the answer has not settled"
        answer = answer.value if answer.error is None else module.ROUTE.error(request, version, answer.error.code,
                                                                              answer.error.message)
    data = codec.encode_response(module.API_KEY, version, 7, answer)
    schema = codec.response_schema(module.API_KEY, version)
    value, _size = entity_reader(schema)(data, 8 + (1 if schema.__flexible__ else 0))
    return value


def new_app(tmp_path, kafka=KAFKA):
    return App(single_node_config(str(tmp_path / "data"), kafka=kafka), 1, NOW, lambda: NOW, RecordingPeers())


@pytest.fixture
def app(tmp_path):
    """One node with a Kafka listener, coordinating every group, topic ``t`` of 4 partitions."""
    app = new_app(tmp_path)
    assert ask(app, find_coordinator, 0, key="g").error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    app.tick(NOW)
    create_topic(app, "t", partitions=4)
    yield app
    app.close(NOW)


def tid(app, name="t") -> uuid.UUID:
    return uuid.UUID(hex=app.control.image.get(name).topic_id)


def owned(assignment) -> set:
    return {(tp.topic_id, p) for tp in assignment.topic_partitions for p in tp.partitions}


# -- FindCoordinator ---------------------------------------------------------------------


def test_find_coordinator_answers_the_kafka_address_single_and_batched(app):
    for version in (0, 1, 2, 3):
        answer = ask(app, find_coordinator, version, key="g")
        assert (answer.error_code, answer.node_id, answer.host, answer.port) == (0, 1, *KAFKA)
    answer = ask(app, find_coordinator, 4, key_type=0, coordinator_keys=("a", "b"))
    assert [(c.key, c.error_code, c.host, c.port) for c in answer.coordinators] == [("a", 0, *KAFKA), ("b", 0, *KAFKA)]
    bad = ask(app, find_coordinator, 6, key_type=0, coordinator_keys=("",))
    assert bad.coordinators[0].error_code == ErrorCode.INVALID_GROUP_ID and bad.coordinators[0].node_id == -1


def test_a_transaction_coordinator_is_placed_like_a_group_and_other_key_types_are_invalid(app):
    # InitProducerId refuses the transactional id there (INVALID_TXN_STATE): a clearer end than a retried error
    txn = ask(app, find_coordinator, 4, key_type=1, coordinator_keys=("tx",)).coordinators[0]
    assert (txn.error_code, txn.node_id, txn.host, txn.port) == (0, 1, *KAFKA)
    assert ask(app, find_coordinator, 2, key="tx", key_type=1).error_code == 0
    assert ask(app, find_coordinator, 6, key_type=2, coordinator_keys=("s",)).coordinators[0].error_code == ErrorCode.INVALID_REQUEST


def test_a_coordinator_without_a_kafka_listener_is_not_available(tmp_path):
    app = new_app(tmp_path, kafka=None)
    ask(app, find_coordinator, 3, key="g")
    app.tick(NOW)
    assert ask(app, find_coordinator, 3, key="g").error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    app.close(NOW)


# -- ConsumerGroupHeartbeat (KIP-848) ------------------------------------------------------


def beat(app, member, epoch, version=1, now=NOW, **fields):
    base = {"group_id": "g", "member_id": member, "member_epoch": epoch, "rebalance_timeout": -1,
            "subscribed_topic_names": None, "topic_partitions": None}
    return ask(app, consumer_group_heartbeat, version, now=now, **{**base, **fields})


def join(app, member, topics=("t",), **fields):
    return beat(app, member, 0, rebalance_timeout=300_000, subscribed_topic_names=topics, topic_partitions=(), **fields)


def test_a_kip848_member_joins_and_gets_every_partition_by_topic_id(app):
    answer = join(app, "m1", server_assignor="uniform")
    assert answer.error_code == 0 and answer.member_id == "m1" and answer.member_epoch >= 1
    assert owned(answer.assignment) == {(tid(app), p) for p in range(4)}
    assert 100 <= answer.heartbeat_interval.total_seconds() * 1000 <= 3000
    # null fields: unchanged since the last heartbeat (no INVALID_REQUEST for the -1 rebalance timeout)
    again = beat(app, "m1", answer.member_epoch)
    assert (again.error_code, again.member_epoch) == (0, answer.member_epoch)
    assert owned(again.assignment) == owned(answer.assignment)
    assert [m.topics for m in app.groups.describe_group(CTX, "g", NOW).members] == [["t"]]


def test_two_kip848_members_hand_partitions_over_by_topic_id(app):
    a = join(app, "a")
    b = join(app, "b")
    assert owned(b.assignment) == set()  # a still holds everything
    a = beat(app, "a", a.member_epoch, topic_partitions=[{"topic_id": tid(app), "partitions": [0, 1, 2, 3]}])
    kept = sorted(p for _t, p in owned(a.assignment))
    assert len(kept) == 2  # two revoked, pending release
    a = beat(app, "a", a.member_epoch, topic_partitions=[{"topic_id": tid(app), "partitions": kept}])  # released
    b = beat(app, "b", b.member_epoch)
    assert sorted(p for _t, p in owned(b.assignment)) == sorted(set(range(4)) - set(kept))


@pytest.mark.parametrize("fields, words", [
    ({"group_id": ""}, "group_id can't be empty"),
    ({"member_id": ""}, "member_id can't be empty"),
    ({"member_epoch": -3}, "member_epoch -3 is not an epoch"),
    ({"member_epoch": 0, "subscribed_topic_names": ("t",), "topic_partitions": ()}, "rebalance_timeout must be given"),
    ({"member_epoch": 0, "rebalance_timeout": 1000, "topic_partitions": ()}, "subscribed_topic_names or subscribed_topic_regex"),
    ({"member_epoch": 0, "rebalance_timeout": 1000, "subscribed_topic_names": ("t",),
      "topic_partitions": [{"topic_id": uuid.uuid4(), "partitions": [0]}]}, "topic_partitions must be empty"),
])
def test_heartbeats_that_break_kafkas_rules_are_invalid_requests_naming_the_rule(app, fields, words):
    answer = beat(app, "m1", fields.pop("member_epoch", 1), **fields)
    assert answer.error_code == ErrorCode.INVALID_REQUEST and words in answer.error_message


def test_owned_partitions_of_an_unknown_topic_id_are_left_out(app):
    a = join(app, "a")
    a = beat(app, "a", a.member_epoch, topic_partitions=[{"topic_id": uuid.uuid4(), "partitions": [0]},
                                                         {"topic_id": tid(app), "partitions": [0, 1, 2, 3]}])
    assert a.error_code == 0 and len(owned(a.assignment)) == 4


def test_a_kip848_leave_answers_its_epoch_and_no_assignment(app):
    a = join(app, "a")
    left = beat(app, "a", -1)
    assert (left.error_code, left.member_epoch, left.assignment) == (0, -1, None)
    assert app.groups.describe_group(CTX, "g", NOW).members == []


def test_kip848_errors_are_answered_at_the_top_level(app):
    a = join(app, "a")
    assert beat(app, "a", a.member_epoch + 5).error_code == ErrorCode.FENCED_MEMBER_EPOCH
    assert beat(app, "nobody", 3).error_code == ErrorCode.UNKNOWN_MEMBER_ID
    bad = join(app, "c", server_assignor="cooperative-sticky")
    assert bad.error_code == ErrorCode.UNSUPPORTED_ASSIGNOR and "cooperative-sticky" in bad.error_message
    assert join(app, "d", version=1, subscribed_topic_regex="(").error_code == ErrorCode.INVALID_REQUEST


def test_a_regex_subscription_takes_the_existing_matching_topics(app):
    create_topic(app, "t2", partitions=1)
    create_topic(app, "other", partitions=1)
    answer = beat(app, "r", 0, rebalance_timeout=300_000, subscribed_topic_names=(), subscribed_topic_regex="t.*",
                  topic_partitions=())
    assert answer.error_code == 0
    assert [m.topics for m in app.groups.describe_group(CTX, "g", NOW).members] == [["t", "t2"]]
    assert len(owned(answer.assignment)) == 5


def test_a_regex_that_backtracks_exponentially_in_python_re_is_matched_in_linear_time(app):
    # Python's re takes ~2 s for (a+)+ against 26 a's and a '-' (doubling per character),
    # stalling the broker's one thread; Kafka (RE2J) and RE2 take microseconds
    import time

    create_topic(app, "a" * 30 + "-x", partitions=1)  # re: ~30 s
    started = time.perf_counter()
    answer = beat(app, "r", 0, rebalance_timeout=300_000, subscribed_topic_names=(), subscribed_topic_regex="(a+)+",
                  topic_partitions=())
    assert time.perf_counter() - started < 2.0
    assert answer.error_code == 0
    assert [m.topics for m in app.groups.describe_group(CTX, "g", NOW).members] == [[]]


def test_regex_features_re2_lacks_are_invalid_requests(app):
    for pattern in (r"(t)\1", "(?=t)t"):
        answer = join(app, "d", version=1, subscribed_topic_regex=pattern)
        assert answer.error_code == ErrorCode.INVALID_REQUEST and "subscribed_topic_regex" in answer.error_message


def test_a_v0_member_without_an_id_is_given_one(app):
    answer = beat(app, "", 0, version=0, rebalance_timeout=300_000, subscribed_topic_names=("t",), topic_partitions=())
    assert answer.error_code == 0 and answer.member_id


# -- OffsetCommit / OffsetFetch ------------------------------------------------------------


def commit(app, version, partitions, topic="t", **fields):
    key = {"topic_id": tid(app, topic)} if version >= 10 else {"name": topic}
    parts = [{"partition_index": p, "committed_offset": o, "committed_metadata": f"m{o}"} for p, o in partitions.items()]
    base = {"group_id": "g", "generation_id_or_member_epoch": -1, "member_id": "", "topics": [{**key, "partitions": parts}]}
    return ask(app, offset_commit, version, **{**base, **fields})


def codes(answer) -> dict:
    return {(t.name if hasattr(t, "name") else t.topic_id, p.partition_index): p.error_code
            for t in answer.topics for p in t.partitions}


@pytest.mark.parametrize("version", [2, 5, 7, 8, 9, 10])
def test_an_admin_commit_is_read_back_by_every_fetch_version(app, version):
    answer = commit(app, version, {0: 5, 1: 7})
    assert set(codes(answer).values()) == {0}
    v1 = ask(app, offset_fetch, 1, group_id="g", topics=[{"name": "t", "partition_indexes": [0, 1, 2]}])
    assert [(p.partition_index, p.committed_offset, p.metadata) for p in v1.topics[0].partitions] == \
        [(0, 5, "m5"), (1, 7, "m7"), (2, -1, "")]
    every = ask(app, offset_fetch, 7, group_id="g", topics=None, require_stable=True)
    assert every.error_code == 0
    assert [(t.name, [(p.partition_index, p.committed_offset, p.committed_leader_epoch) for p in t.partitions])
            for t in every.topics] == [("t", [(0, 5, -1), (1, 7, -1)])]


def test_offset_fetch_v8_answers_several_groups_each_on_its_own(app):
    commit(app, 8, {3: 9})
    answer = ask(app, offset_fetch, 8, groups=[{"group_id": "g", "topics": None},
                                               {"group_id": "other", "topics": [{"name": "t", "partition_indexes": [3]}]},
                                               {"group_id": "", "topics": None}])
    g, other, bad = answer.groups
    assert [(t.name, [(p.partition_index, p.committed_offset) for p in t.partitions]) for t in g.topics] == [("t", [(3, 9)])]
    assert other.error_code == 0 and other.topics[0].partitions[0].committed_offset == -1
    assert bad.error_code == ErrorCode.INVALID_GROUP_ID


def test_offset_fetch_v10_names_topics_by_id(app):
    commit(app, 10, {2: 4})
    answer = ask(app, offset_fetch, 10, groups=[{"group_id": "g", "topics": [{"topic_id": tid(app), "partition_indexes": [2]}]},
                                                {"group_id": "g", "topics": None}])
    asked, every = answer.groups
    assert (asked.topics[0].topic_id, asked.topics[0].partitions[0].committed_offset) == (tid(app), 4)
    assert [(t.topic_id, [p.committed_offset for p in t.partitions]) for t in every.topics] == [(tid(app), [4])]


def test_unknown_partitions_and_long_metadata_fail_alone(app):
    parts = [{"partition_index": 0, "committed_offset": 1, "committed_metadata": None},
             {"partition_index": 9, "committed_offset": 1, "committed_metadata": None},
             {"partition_index": 1, "committed_offset": 1, "committed_metadata": "x" * 5000}]
    answer = ask(app, offset_commit, 8, group_id="g", generation_id_or_member_epoch=-1, member_id="",
                 topics=[{"name": "t", "partitions": parts}, {"name": "nope", "partitions": [parts[0]]}])
    assert codes(answer) == {("t", 0): 0, ("t", 9): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             ("t", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE, ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert app.groups.offsets["g"] == {("t", 0): (1, "")}


def test_commits_carry_the_members_epoch_and_group_errors_reach_every_partition(app):
    member = join(app, "m")
    ok = commit(app, 9, {0: 3}, member_id="m", generation_id_or_member_epoch=member.member_epoch)
    assert codes(ok) == {("t", 0): 0}
    stale = commit(app, 9, {0: 4, 1: 4}, member_id="m", generation_id_or_member_epoch=member.member_epoch + 1)
    assert codes(stale) == {("t", 0): ErrorCode.STALE_MEMBER_EPOCH, ("t", 1): ErrorCode.STALE_MEMBER_EPOCH}
    busy = commit(app, 2, {0: 4})  # an admin commit while the group has members
    assert codes(busy) == {("t", 0): ErrorCode.NON_EMPTY_GROUP}


# -- ListGroups / DescribeGroups / DeleteGroups --------------------------------------------


def test_list_groups_with_states_and_types_filters(app):
    join(app, "m")
    commit(app, 2, {0: 1}, group_id="offsets-only")
    every = ask(app, list_groups, 0)
    assert sorted((g.group_id, g.protocol_type) for g in every.groups) == [("g", "consumer"), ("offsets-only", "consumer")]
    stable = ask(app, list_groups, 4, states_filter=("stable",))
    assert [(g.group_id, g.group_state) for g in stable.groups] == [("g", "Stable")]
    assert [g.group_id for g in ask(app, list_groups, 5, states_filter=(), types_filter=("Consumer",)).groups] == \
        ["g", "offsets-only"]
    assert ask(app, list_groups, 5, states_filter=(), types_filter=("classic",)).groups == ()


def test_describe_groups_gives_consumer_protocol_members(app):
    m = join(app, "m")
    answer = ask(app, describe_groups, 5, groups=("g", "none"), include_authorized_operations=False)
    g, none = answer.groups
    assert (g.error_code, g.group_state, g.protocol_type, g.protocol_data) == (0, "Stable", "consumer", "sticky")
    (member,) = g.members
    assert (member.member_id, member.client_id) == ("m", "rdkafka")
    assert decode_subscription(member.member_metadata) == ["t"]
    assert decode_assignment(member.member_assignment) == [("t", p) for p in range(4)]
    assert (none.error_code, none.group_state) == (0, "Dead")
    assert ask(app, describe_groups, 6, groups=("none",), include_authorized_operations=False).groups[0].error_code == \
        ErrorCode.GROUP_ID_NOT_FOUND


def test_delete_groups_each_on_its_own(app):
    join(app, "m")
    commit(app, 2, {0: 1}, group_id="done")
    answer = ask(app, delete_groups, 2, groups_names=("g", "done", "none"))
    assert [(r.group_id, r.error_code) for r in answer.results] == \
        [("g", ErrorCode.NON_EMPTY_GROUP), ("done", 0), ("none", ErrorCode.GROUP_ID_NOT_FOUND)]
    assert "done" not in app.groups.offsets


# -- Metadata by topic id (librdkafka asks so for a KIP-848 assignment) ------------------------


def test_metadata_finds_topics_by_id(app):
    unknown = uuid.uuid4()
    answer = ask(app, metadata, 12, topics=[{"topic_id": tid(app), "name": None}, {"topic_id": unknown, "name": None}],
                 allow_auto_topic_creation=False, include_topic_authorized_operations=False)
    found, missing = sorted(answer.topics, key=lambda t: t.name is None)
    assert (found.name, found.topic_id, len(found.partitions)) == ("t", tid(app), 4)
    assert (missing.error_code, missing.topic_id) == (100, unknown)


# -- classic groups: JoinGroup / SyncGroup / Heartbeat / LeaveGroup -----------------------------


SUBSCRIPTION = groupmap.encode_subscription(["t"])


def classic_join(app, version, member_id="", **fields):
    base = {"group_id": "c", "session_timeout": 10_000, "rebalance_timeout": 20_000, "member_id": member_id,
            "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": SUBSCRIPTION}]}
    return ask(app, join_group, version, **{**base, **fields})


@pytest.mark.parametrize("version", [0, 1, 3, 5, 7, 9])
def test_a_classic_member_joins_syncs_heartbeats_and_leaves(app, version):
    joined = classic_join(app, version)
    if version >= 4:  # KIP-394: a new member is given its id first
        assert joined.error_code == ErrorCode.MEMBER_ID_REQUIRED and joined.member_id
        joined = classic_join(app, version, joined.member_id)
    assert joined.error_code == 0 and joined.leader == joined.member_id and joined.generation_id >= 1
    assert joined.protocol_name == "range" and [m.metadata for m in joined.members] == [SUBSCRIPTION]
    assignment = groupmap.encode_assignment([("t", p) for p in range(4)])
    sync_version = min(version, 5)
    synced = ask(app, sync_group, sync_version, group_id="c", generation_id=joined.generation_id, member_id=joined.member_id,
                 assignments=[{"member_id": joined.member_id, "assignment": assignment}])
    assert (synced.error_code, synced.assignment) == (0, assignment)
    beat_version = min(version, 4)
    assert ask(app, heartbeat, beat_version, group_id="c", generation_id=joined.generation_id,
               member_id=joined.member_id).error_code == 0
    assert ask(app, heartbeat, beat_version, group_id="c", generation_id=joined.generation_id + 1,
               member_id=joined.member_id).error_code == ErrorCode.ILLEGAL_GENERATION
    described = ask(app, describe_groups, 5, groups=("c",), include_authorized_operations=False).groups[0]
    assert (described.group_state, described.protocol_type, described.protocol_data) == ("Stable", "consumer", "range")
    assert [(m.member_id, m.member_metadata, m.member_assignment) for m in described.members] == \
        [(joined.member_id, SUBSCRIPTION, assignment)]
    assert [(g.group_id, g.group_type) for g in ask(app, list_groups, 5, states_filter=(), types_filter=("classic",)).groups] \
        == [("c", "classic")]
    commit_version = max(version, 2)
    committed = commit(app, commit_version, {0: 8}, group_id="c", member_id=joined.member_id,
                       generation_id_or_member_epoch=joined.generation_id)
    assert set(codes(committed).values()) == {0}
    if version >= 3:
        left = ask(app, leave_group, min(version, 5), group_id="c", members=[{"member_id": joined.member_id},
                                                                            {"member_id": "ghost"}])
        assert left.error_code == 0
        assert [(m.member_id, m.error_code) for m in left.members] == [(joined.member_id, 0), ("ghost", ErrorCode.UNKNOWN_MEMBER_ID)]
    else:
        assert ask(app, leave_group, version, group_id="c", member_id=joined.member_id).error_code == 0
    assert ask(app, describe_groups, 5, groups=("c",), include_authorized_operations=False).groups[0].members == ()


def test_classic_and_kip848_members_do_not_share_a_group(app):
    join(app, "m")  # a KIP-848 member in group g
    refused = classic_join(app, 5, group_id="g")
    assert refused.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL and refused.generation_id == -1
    classic_join(app, 3)  # a classic member in group c
    assert beat(app, "k", 0, group_id="c", rebalance_timeout=300_000, subscribed_topic_names=("t",),
                topic_partitions=()).error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_classic_requests_to_a_group_this_broker_does_not_coordinate_answer_its_error(app):
    joined = classic_join(app, 9, group_id="")
    assert joined.error_code == ErrorCode.INVALID_GROUP_ID and joined.protocol_name is None
    assert classic_join(app, 6, group_id="").protocol_name == ""  # not nullable before v7
    synced = ask(app, sync_group, 5, group_id="", generation_id=1, member_id="m", assignments=())
    assert synced.error_code == ErrorCode.INVALID_GROUP_ID
    assert ask(app, heartbeat, 4, group_id="", generation_id=1, member_id="m").error_code == ErrorCode.INVALID_GROUP_ID
    assert ask(app, leave_group, 5, group_id="", members=[{"member_id": "m"}]).error_code == ErrorCode.INVALID_GROUP_ID
