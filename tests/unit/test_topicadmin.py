"""TopicAdmin as the controller and forwarding to it, through Apps without sockets.

The controller cases run on one node (everything commits at once) and on broker 1 of a
three-broker cluster elected by hand, where nothing commits until broker 2 fetches it --
so "answered once committed" is observable.  The forwarding cases use broker 1 told by a
``raft_begin_epoch`` that broker 2 is the controller: a real ControlPlane, no stub.
"""

import pytest

from tests.unit.servicefakes import START_MS, RecordingPeers, acknowledge, elect, error_code, follow, settle, single_app, three_brokers
from zbroker.app import App
from zbroker.context import INTERNAL, Completion, PeerReply
from zbroker.control.topicadmin import (
    ADMIN_TIMEOUT_MS,
    AlterIsr,
    AlterTopicConfig,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    InitProducerId,
    ProducerId,
)
from zbroker.errors import ErrorCode
from zbroker.frontends.native.peers import PeerLink

NOW = START_MS


@pytest.fixture
def app(tmp_path):
    app = single_app(tmp_path)
    yield app
    app.close(NOW)


@pytest.fixture
def cluster_app(tmp_path):
    """Broker 1 of three, not (yet) the controller; its peers record what it sends."""
    app = App(three_brokers(tmp_path), 1, NOW, lambda: NOW, RecordingPeers())
    yield app
    app.close(NOW)


def create(app, name="t", now=NOW, **fields):
    return app.admin.create_topic(INTERNAL, CreateTopic(name, **fields), now)


# -- as the controller, one node ----------------------------------------------------------


def test_create_is_answered_with_the_topic_in_the_image(app):
    seen = []
    done = create(app, partitions=3, config={"retention_ms": 60_000})
    done.on_done(lambda c: seen.append(app.control.image.get("t")))
    assert settle(done) is None
    assert seen[0].partition_count == 3 and seen[0].overrides == {"retention_ms": 60_000}
    assert sorted(app.partitions.online) == [("t", 0), ("t", 1), ("t", 2)]
    assert error_code(lambda: create(app)) == ErrorCode.TOPIC_ALREADY_EXISTS


@pytest.mark.parametrize("fields, code", [
    ({"partitions": 0}, ErrorCode.INVALID_PARTITIONS),
    ({"partitions": 100_001}, ErrorCode.INVALID_PARTITIONS),
    ({"replication_factor": 2}, ErrorCode.INVALID_REPLICATION_FACTOR),
    ({"replication_factor": 0}, ErrorCode.INVALID_REPLICATION_FACTOR),
    ({"config": {"retention_ms": "soon"}}, ErrorCode.INVALID_CONFIG),
    ({"config": {"no_such_key": 1}}, ErrorCode.INVALID_CONFIG),
    ({"name": "bad/name"}, ErrorCode.INVALID_TOPIC_EXCEPTION),
    ({"name": ""}, ErrorCode.INVALID_TOPIC_EXCEPTION),
    ({"name": "__consumer_offsets"}, ErrorCode.INVALID_TOPIC_EXCEPTION),
])
def test_a_bad_create_is_refused_and_proposes_nothing(app, fields, code):
    end = app.control.metalog.end_offset()
    name = fields.pop("name", "t")
    assert error_code(lambda: create(app, name, **fields)) == code
    assert app.control.metalog.end_offset() == end and app.admin.pending == {}


def test_validate_only_checks_but_proposes_nothing(app):
    end = app.control.metalog.end_offset()
    assert create(app, partitions=2, validate_only=True) is None
    assert app.control.metalog.end_offset() == end and app.control.image.get("t") is None
    assert error_code(lambda: create(app, partitions=0, validate_only=True)) == ErrorCode.INVALID_PARTITIONS


def test_alter_config_sets_and_removes_overrides(app):
    settle(create(app, config={"retention_ms": 5000, "segment_bytes": 4096}))
    settle(app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", {"retention_ms": None, "flush_ms": 10}), NOW))
    assert app.control.image.get("t").overrides == {"segment_bytes": 4096, "flush_ms": 10}
    for config in ({"flush_ms": -5}, {"nope": None}):
        assert error_code(lambda: app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", config), NOW)) == \
            ErrorCode.INVALID_CONFIG
    assert error_code(lambda: app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("x", {}), NOW)) == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_create_partitions_only_grows_a_topic(app):
    settle(create(app, partitions=2))
    settle(app.admin.create_partitions(INTERNAL, CreatePartitions("t", 5), NOW))
    topic = app.control.image.get("t")
    assert [pm.partition for pm in topic.partitions] == [0, 1, 2, 3, 4]
    assert ("t", 4) in app.partitions.online
    for total in (5, 3):
        assert error_code(lambda: app.admin.create_partitions(INTERNAL, CreatePartitions("t", total), NOW)) == \
            ErrorCode.INVALID_PARTITIONS


def test_delete_removes_the_topic_and_its_partitions(app):
    settle(create(app, partitions=2))
    assert settle(app.admin.delete_topic(INTERNAL, DeleteTopic("t"), NOW)) is None
    assert app.control.image.get("t") is None and app.partitions.online == {}
    assert error_code(lambda: app.admin.delete_topic(INTERNAL, DeleteTopic("t"), NOW)) == \
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


# -- as the controller of three brokers: answered once committed ------------------------------


def test_a_create_waits_for_a_quorum_then_completes(cluster_app):
    now = elect(cluster_app, NOW)
    done = create(cluster_app, partitions=2, replication_factor=3, now=now)
    assert isinstance(done, Completion) and not done.done
    assert "t" in cluster_app.admin.pending  # a second create is refused while the first is uncommitted
    assert error_code(lambda: create(cluster_app, now=now)) == ErrorCode.TOPIC_ALREADY_EXISTS
    acknowledge(cluster_app, now + 1)
    assert settle(done) is None
    assert [sorted(pm.replicas) for pm in cluster_app.control.image.get("t").partitions] == [[1, 2, 3]] * 2
    assert cluster_app.admin.pending == {}


def test_an_uncommitted_change_times_out(cluster_app):
    now = elect(cluster_app, NOW)
    done = create(cluster_app, now=now)
    cluster_app.purgatory.expire(now + ADMIN_TIMEOUT_MS - 1)
    assert not done.done
    cluster_app.purgatory.expire(now + ADMIN_TIMEOUT_MS)
    assert error_code(lambda: done) == ErrorCode.REQUEST_TIMED_OUT


def test_a_change_pending_when_the_controller_is_deposed_fails_not_controller(cluster_app):
    now = elect(cluster_app, NOW)
    done = create(cluster_app, now=now)
    follow(cluster_app, 3, now + 1, epoch=cluster_app.control.epoch + 1)
    cluster_app.tick(now + 1)
    assert error_code(lambda: done) == ErrorCode.NOT_CONTROLLER


def test_producer_ids_are_distinct_even_before_a_commit(cluster_app):
    now = elect(cluster_app, NOW)
    first = cluster_app.admin.init_producer_id(INTERNAL, now)
    second = cluster_app.admin.init_producer_id(INTERNAL, now)
    assert not first.done and not second.done
    acknowledge(cluster_app, now + 1)
    ids = {settle(first).producer_id, settle(second).producer_id}
    assert len(ids) == 2
    assert cluster_app.control.image.next_producer_id == max(ids) + 1


def test_alter_isr_is_fenced_by_leader_epoch_and_commits_otherwise(cluster_app):
    now = elect(cluster_app, NOW)
    done = create(cluster_app, partitions=1, replication_factor=3, now=now)
    acknowledge(cluster_app, now)
    settle(done)
    pm = cluster_app.control.image.partition("t", 0)
    stale = AlterIsr("t", 0, pm.leader, pm.leader_epoch + 1, [pm.leader])
    assert error_code(lambda: cluster_app.admin.alter_isr(INTERNAL, stale, now)) == ErrorCode.FENCED_LEADER_EPOCH
    wrong_leader = AlterIsr("t", 0, (pm.leader % 3) + 1, pm.leader_epoch, pm.replicas)
    assert error_code(lambda: cluster_app.admin.alter_isr(INTERNAL, wrong_leader, now)) == ErrorCode.FENCED_LEADER_EPOCH
    no_leader = AlterIsr("t", 0, pm.leader, pm.leader_epoch, [r for r in pm.replicas if r != pm.leader])
    assert error_code(lambda: cluster_app.admin.alter_isr(INTERNAL, no_leader, now)) == ErrorCode.INVALID_REQUEST
    cluster_app.admin.alter_isr(INTERNAL, AlterIsr("t", 0, pm.leader, pm.leader_epoch, [pm.leader]), now)
    assert pm.isr == pm.replicas  # proposed, not yet committed
    acknowledge(cluster_app, now + 1)
    assert cluster_app.control.image.partition("t", 0).isr == [pm.leader]


# -- forwarded to the controller -------------------------------------------------------------


def test_with_no_controller_known_admin_requests_say_not_controller(cluster_app):
    assert cluster_app.control.controller == -1
    assert error_code(lambda: create(cluster_app)) == ErrorCode.NOT_CONTROLLER
    assert error_code(lambda: cluster_app.admin.init_producer_id(INTERNAL, NOW)) == ErrorCode.NOT_CONTROLLER
    assert error_code(lambda: cluster_app.admin.alter_isr(INTERNAL, AlterIsr("t", 0, 1, 0, [1]), NOW)) == \
        ErrorCode.NOT_CONTROLLER
    assert cluster_app.peers.calls == []


def test_a_forwarded_create_completes_with_the_controllers_answer(cluster_app):
    follow(cluster_app, 2, NOW)
    peers = cluster_app.peers
    ok = create(cluster_app, partitions=4, now=NOW)
    refused = create(cluster_app, "u", now=NOW + 1)
    assert [(c.broker_id, c.message, c.timeout_ms) for c in peers.calls] == \
        [(2, CreateTopic("t", 4), ADMIN_TIMEOUT_MS), (2, CreateTopic("u"), ADMIN_TIMEOUT_MS)]
    assert cluster_app.control.metalog.end_offset() == 0  # a follower proposes nothing itself
    assert not ok.done
    peers.calls[0].on_reply(PeerReply(0), NOW + 5)
    assert settle(ok) is None
    peers.calls[1].on_reply(PeerReply(int(ErrorCode.TOPIC_ALREADY_EXISTS), "exists"), NOW + 5)
    assert error_code(lambda: refused) == ErrorCode.TOPIC_ALREADY_EXISTS and refused.error.message == "exists"


def test_a_forwarded_producer_id_request_relays_the_value(cluster_app):
    follow(cluster_app, 2, NOW)
    done = cluster_app.admin.init_producer_id(INTERNAL, NOW)
    (call,) = cluster_app.peers.calls
    assert call.message == InitProducerId()
    call.on_reply(PeerReply(0, None, ProducerId(77, 0)), NOW + 1)
    assert settle(done) == ProducerId(77, 0)


def test_a_forwarded_request_the_controller_never_answers_times_out(tmp_path):
    frames = []
    link = PeerLink(lambda broker, message: frames.append((broker, message)))
    app = App(three_brokers(tmp_path), 1, NOW, lambda: NOW, link)
    follow(app, 2, NOW)
    done = app.admin.delete_topic(INTERNAL, DeleteTopic("t"), NOW)
    assert [broker for broker, _ in frames if broker == 2] and len(link) == 1
    link.expire(NOW + ADMIN_TIMEOUT_MS - 1)
    assert not done.done
    link.expire(NOW + ADMIN_TIMEOUT_MS)
    assert error_code(lambda: done) == ErrorCode.REQUEST_TIMED_OUT and len(link) == 0
    app.close(NOW)


def test_the_offsets_topic_and_auto_creation_are_asked_for_one_way(cluster_app):
    follow(cluster_app, 2, NOW)
    cluster_app.admin.ensure_offsets_topic(NOW)
    cluster_app.admin.auto_create("auto", NOW)
    cluster_app.admin.auto_create("bad/name", NOW)
    messages = [m for b, m in cluster_app.peers.sent if b == 2 and not hasattr(m, "fields")]
    assert [type(m).__name__ for m in messages] == ["CreateInternalTopic", "CreateTopic"]
    assert messages[0].replication_factor == 3 and messages[0].config["cleanup_policy"] == "compact"
    assert messages[1] == CreateTopic("auto")
