"""The Kafka door's admin handlers over real services, without sockets: several resources
per request, answers that wait for the controller, and what a forwarding broker answers."""

from __future__ import annotations

import pytest
from tests.unit.servicefakes import START_MS, RecordingPeers, follow, settle, three_brokers

from zbroker.app import App
from zbroker.context import Completion, PeerReply, RequestContext
from zbroker.control.topicadmin import AlterTopicConfig, CreateTopic
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import codec
from zbroker.frontends.kafka.gather import failed, gather
from zbroker.frontends.kafka.handlers import ROUTES

NOW = START_MS
CTX = RequestContext(listener="kafka")
ROUTE = {r.name: r for r in ROUTES}


def run(app, api: str, version: int, **fields):
    """Call a handler with kio's request of that version, built from ``fields``."""
    route = ROUTE[api]
    request = codec.build(codec.request_schema(route.api_key, version), fields)
    return route.call(app, CTX, request, version, NOW)


def encodes(api: str, version: int, answer) -> dict:
    """``answer`` (settled if a Completion) goes out as that version's response (it
    encodes), and is returned."""
    answer = settle(answer)
    codec.encode_response(ROUTE[api].api_key, version, 7, answer)
    return answer


@pytest.fixture
def follower(tmp_path):
    """Broker 1 of three, following controller 2: admin requests are forwarded."""
    app = App(three_brokers(tmp_path), 1, NOW, lambda: NOW, RecordingPeers())
    follow(app, 2, NOW)
    yield app
    app.close(NOW)


def test_gather_answers_once_every_call_settled_in_request_order():
    first, second = Completion(), Completion()
    calls = [("a", lambda: first), ("b", lambda: (_ for _ in ()).throw(RequestError(ErrorCode.INVALID_CONFIG, "bad"))),
             ("c", failed(ErrorCode.INVALID_REQUEST, "twice")), ("d", lambda: second), ("e", lambda: 5)]
    done = gather(calls, lambda outcomes: {k: (o.error_code, o.error_message, o.value) for k, o in outcomes.items()})
    second.complete("later")
    assert not done.done
    first.fail(RequestError(ErrorCode.NOT_CONTROLLER, "moved"))
    assert settle(done) == {"a": (41, "moved", None), "b": (40, "bad", None), "c": (42, "twice", None),
                            "d": (0, None, "later"), "e": (0, None, 5)}
    assert gather([("x", lambda: 1)], lambda outcomes: {"n": len(outcomes)}) == {"n": 1}


def test_gather_turns_a_failing_answer_into_an_error():
    pending = Completion()
    done = gather([("a", lambda: pending)], lambda outcomes: 1 / 0)
    pending.complete()
    assert done.error.code == ErrorCode.UNKNOWN_SERVER_ERROR


@pytest.mark.parametrize("version", [2, 4, 5, 7])
def test_create_topics_answers_per_topic_at_every_version(app, version):  # app: single node with topic t
    answer = encodes("CreateTopics", version, run(app, "CreateTopics", version, timeout=30000, validate_only=False, topics=[
        {"name": "a", "num_partitions": -1, "replication_factor": -1, "assignments": [],
         "configs": [{"name": "cleanup.policy", "value": "compact"}]},
        {"name": "b", "num_partitions": 2, "replication_factor": 1, "assignments": [], "configs": [{"name": "nope", "value": "1"}]},
        {"name": "c", "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []},
        {"name": "c", "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []},
    ]))
    a, b, c = answer["topics"]
    meta = app.control.image.get("a")
    assert (a["error_code"], a["num_partitions"], a["replication_factor"], a["topic_id"]) == (0, 3, 1, meta.topic_id)
    assert meta.overrides == {"cleanup_policy": "compact"}
    assert (b["error_code"], b["error_message"]) == (ErrorCode.INVALID_CONFIG, "unknown topic config 'nope'")
    assert c["error_code"] == ErrorCode.INVALID_REQUEST and app.control.image.get("c") is None


def test_a_forwarded_create_waits_for_the_controller_and_reports_what_was_asked(follower):
    done = run(follower, "CreateTopics", 7, timeout=30000, validate_only=False, topics=[
        {"name": "t", "num_partitions": 4, "replication_factor": 3, "assignments": [],
         "configs": [{"name": "retention.ms", "value": "1000"}]},
        {"name": "u", "num_partitions": 1, "replication_factor": 3, "assignments": [],
         "configs": [{"name": "min.insync.replicas", "value": "3"}]}])
    first, second = follower.peers.calls
    assert first.broker_id == 2 and first.message == CreateTopic("t", 4, 3, {"retention_ms": 1000})
    first.on_reply(PeerReply(0), NOW + 1)
    assert not done.done
    second.on_reply(PeerReply(int(ErrorCode.INVALID_CONFIG), "min_insync_replicas=3, replication_factor=2: too many"), NOW + 1)
    t, u = encodes("CreateTopics", 7, done)["topics"]
    # not yet in this broker's image: the requested values, no id
    assert (t["error_code"], t["num_partitions"], t["replication_factor"], t["topic_id"]) == (0, 4, 3, None)
    assert {c["name"]: c["value"] for c in t["configs"]}["retention.ms"] == "1000"
    assert u["error_message"] == "min.insync.replicas=3, replication_factor=2: too many"


def test_alter_configs_are_forwarded_with_validate_only(follower):
    follower.control.image.add(_topic(follower, "t", {"retention_ms": 5, "segment_ms": 9}))
    run(follower, "AlterConfigs", 2, validate_only=True, resources=[
        {"resource_type": 2, "resource_name": "t", "configs": [{"name": "retention.ms", "value": "6"}]}])
    run(follower, "IncrementalAlterConfigs", 1, validate_only=False, resources=[
        {"resource_type": 2, "resource_name": "t", "configs": [{"name": "cleanup.policy", "config_operation": 2, "value": "compact"}]}])
    replace, incremental = (c.message for c in follower.peers.calls)
    assert replace == AlterTopicConfig("t", {"segment_ms": None, "retention_ms": 6}, validate_only=True)
    assert incremental == AlterTopicConfig("t", {"cleanup_policy": "delete,compact"}, validate_only=False)


def _topic(app, name, overrides):
    from zbroker.control.metadata import PartitionMeta, TopicMeta
    return TopicMeta(name, [PartitionMeta(0, [1, 2, 3], 2, 0, [1, 2, 3])], overrides, topic_id="ab" * 16)


def test_config_resources_of_unknown_kinds_and_names(app):
    answer = encodes("DescribeConfigs", 4, run(app, "DescribeConfigs", 4, include_synonyms=True, include_documentation=True,
                                                resources=[{"resource_type": 2, "resource_name": "missing", "configuration_keys": None},
                                                           {"resource_type": 4, "resource_name": "9", "configuration_keys": None},
                                                           {"resource_type": 8, "resource_name": "1", "configuration_keys": None},
                                                           {"resource_type": 4, "resource_name": "", "configuration_keys": ["num.partitions"]}]))
    missing, no_broker, logger, defaults = answer["results"]
    assert missing["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert no_broker["error_code"] == ErrorCode.INVALID_REQUEST and "no broker '9'" in no_broker["error_message"]
    assert logger["error_code"] == ErrorCode.INVALID_REQUEST
    (entry,) = defaults["configs"]
    assert (entry["name"], entry["value"], entry["read_only"]) == ("num.partitions", "3", True) and entry["documentation"]
    altered = encodes("AlterConfigs", 0, (run(app, "AlterConfigs", 0, validate_only=False, resources=[
        {"resource_type": 4, "resource_name": "1", "configs": [{"name": "log.retention.ms", "value": "1"}]},
        {"resource_type": 4, "resource_name": "1", "configs": []}])))
    assert [r["error_code"] for r in altered["responses"]] == [ErrorCode.INVALID_REQUEST]  # named twice: one answer


def test_delete_topics_by_name_and_by_id(app):
    run(app, "CreateTopics", 7, timeout=30000, validate_only=False, topics=[
        {"name": n, "num_partitions": 1, "replication_factor": 1, "assignments": [], "configs": []} for n in ("a", "b")])
    b_id = app.control.image.get("b").topic_id
    answer = encodes("DeleteTopics", 6, run(app, "DeleteTopics", 6, timeout=30000, topics=[
        {"name": "a", "topic_id": None}, {"name": None, "topic_id": b_id}, {"name": None, "topic_id": "cd" * 16},
        {"name": "a", "topic_id": b_id}]))
    assert [(r["name"], r["error_code"]) for r in answer["responses"]] == [
        ("a", 0), ("b", 0), (None, 100), ("b", ErrorCode.INVALID_REQUEST)]
    assert answer["responses"][1]["topic_id"] == b_id and set(app.control.image.topics) == {"t"}


def test_describe_cluster_lists_brokers_at_their_kafka_address(tmp_path):
    from zbroker.config import single_node_config
    app = App(single_node_config(str(tmp_path / "d"), kafka=("10.0.0.5", 9093)), 1, NOW, lambda: NOW, RecordingPeers())
    try:
        answer = encodes("DescribeCluster", 2, run(app, "DescribeCluster", 2, include_cluster_authorized_operations=False,
                                                    endpoint_type=1, include_fenced_brokers=True))
        assert (answer["cluster_id"], answer["controller_id"]) == ("zbroker", 1)
        assert answer["brokers"] == [{"broker_id": 1, "host": "10.0.0.5", "port": 9093, "rack": None, "is_fenced": False}]
        controllers = run(app, "DescribeCluster", 1, include_cluster_authorized_operations=False, endpoint_type=2)
        assert controllers["error_code"] == 114
    finally:
        app.close(NOW)
