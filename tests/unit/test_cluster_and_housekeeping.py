"""ClusterInfo (metadata answers, auto-creation, describe_topic) and Housekeeping (retention in
bounded turns) through Apps without sockets; time passed in."""

import dataclasses

import pytest

from tests.unit.servicefakes import (
    START_MS, RecordingPeers, commit_records, create_topic, error_code, follow, follower_fetch,
    partition_change, records_batch, single_app, three_brokers,
)
from zbroker.app import App
from zbroker.config import single_node_config
from zbroker.context import INTERNAL
from zbroker.control.metadata import TOPIC_CONFIG_RECORD
from zbroker.control.topicadmin import CreateTopic
from zbroker.core.cluster import MAX_AUTO_CREATES_PER_REQUEST, BrokerState
from zbroker.core.housekeeping import PARTITIONS_PER_TURN
from zbroker.errors import ErrorCode

NOW = START_MS
SEGMENT = {"segment_bytes": 1024}  # two of the batches below fill a segment
BIG = b"x" * 400


@pytest.fixture
def app(tmp_path):
    app = single_app(tmp_path)
    yield app
    app.close(NOW)


def metadata(app, names=None, auto=False, now=NOW):
    return app.cluster.metadata(INTERNAL, names, auto, now)


def errors(answer):
    return {t.topic: t.error for t in answer.topics}


# -- metadata ---------------------------------------------------------------------------------


def test_metadata_of_every_topic_names_brokers_controller_and_placement(app):
    create_topic(app, "a", partitions=2)
    create_topic(app, "b", partitions=1)
    answer = metadata(app)
    broker = app.config.broker(1)
    assert answer.brokers == [BrokerState(1, broker.host, broker.port, True)]
    assert (answer.cluster_name, answer.controller) == (app.config.name, 1)
    assert [(t.topic, t.error, t.internal) for t in answer.topics] == [("a", 0, False), ("b", 0, False)]
    assert [(p.partition, p.error, p.leader, p.replicas, p.isr) for p in answer.topics[0].partitions] == \
        [(0, 0, 1, [1], [1]), (1, 0, 1, [1], [1])]
    assert answer.topics[0].partitions[0].high_watermark == -1  # positions: describe_topic only


def test_metadata_of_named_topics_tells_unknown_from_invalid(app):
    create_topic(app, "a")
    answer = metadata(app, ["a", "missing", "bad/name", "", "__internal_like"])
    assert errors(answer) == {"a": 0, "missing": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                              "bad/name": ErrorCode.INVALID_TOPIC_EXCEPTION, "": ErrorCode.INVALID_TOPIC_EXCEPTION,
                              "__internal_like": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert app.control.image.get("missing") is None  # not asked to create


def test_a_partition_without_a_leader_says_leader_not_available(cluster):
    app, now = cluster
    commit_records(app, now, partition_change(-1, 1, [1]))
    (topic,) = metadata(app, ["t"], now=now).topics
    assert [(p.partition, p.error, p.leader) for p in topic.partitions] == \
        [(0, ErrorCode.LEADER_NOT_AVAILABLE, -1), (1, 0, 2), (2, 0, 3)]
    assert metadata(app, now=now).controller == 1


def test_auto_create_happens_when_asked_and_allowed(app):
    (topic,) = metadata(app, ["fresh"], auto=True).topics
    assert topic.error == 0 and len(topic.partitions) == app.config.default_partitions()
    assert app.control.image.get("fresh") is not None
    assert errors(metadata(app, ["bad/name"], auto=True)) == {"bad/name": ErrorCode.INVALID_TOPIC_EXCEPTION}


def test_auto_create_is_off_when_the_config_says_so(tmp_path):
    config = single_node_config(str(tmp_path / "data"))
    config = dataclasses.replace(config, settings={**config.settings, "auto_create_topics": False})
    app = App(config, 1, NOW, lambda: NOW, RecordingPeers())
    assert errors(metadata(app, ["fresh"], auto=True)) == {"fresh": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert app.control.image.get("fresh") is None
    app.close(NOW)


def test_auto_create_is_capped_per_request(app):
    names = [f"n{i:02d}" for i in range(MAX_AUTO_CREATES_PER_REQUEST + 2)]
    first = errors(metadata(app, names, auto=True))
    assert [first[n] for n in names] == [0] * MAX_AUTO_CREATES_PER_REQUEST + [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION] * 2
    assert sorted(app.control.image.topics) == names[:MAX_AUTO_CREATES_PER_REQUEST]
    assert set(errors(metadata(app, names, auto=True)).values()) == {0}  # the next request creates the rest


def test_invalid_names_do_not_use_up_the_auto_create_cap(app):
    """Invalid names are never created: counting them would starve a valid name behind them on
    every retry of the same request."""
    names = [f"bad/{i}" for i in range(MAX_AUTO_CREATES_PER_REQUEST)] + ["good"]
    answer = errors(metadata(app, names, auto=True))
    assert answer["good"] == 0 and app.control.image.get("good") is not None
    assert {answer[n] for n in names[:-1]} == {ErrorCode.INVALID_TOPIC_EXCEPTION}


def test_auto_create_through_another_controller_answers_leader_not_available(tmp_path):
    app = App(three_brokers(tmp_path), 1, NOW, lambda: NOW, RecordingPeers())
    follow(app, 2, NOW)
    assert errors(metadata(app, ["fresh"], auto=True)) == {"fresh": ErrorCode.LEADER_NOT_AVAILABLE}
    assert (2, CreateTopic("fresh")) in app.peers.sent
    app.close(NOW)


# -- describe_topic ---------------------------------------------------------------------------


def test_describe_topic_shows_config_and_log_positions(app):
    create_topic(app, "a", partitions=2, config={"retention_ms": 5000})
    app.produce.produce(INTERNAL, 1, 1000, [("a", 1, records_batch(3))], NOW)
    detail = app.cluster.describe_topic(INTERNAL, "a")
    assert (detail.config["retention_ms"], detail.overrides) == (5000, ["retention_ms"])
    assert [(p.log_start_offset, p.high_watermark, p.log_end_offset) for p in detail.partitions] == [(0, 0, 0), (0, 3, 3)]
    assert error_code(lambda: app.cluster.describe_topic(INTERNAL, "missing")) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_describe_topic_shows_positions_only_where_this_broker_leads(cluster):
    app, now = cluster
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, records_batch(3))], now)
    detail = app.cluster.describe_topic(INTERNAL, "t")
    assert [(p.leader, p.log_start_offset, p.high_watermark, p.log_end_offset) for p in detail.partitions] == \
        [(1, 0, 0, 3), (2, -1, -1, -1), (3, -1, -1, -1)]


# -- retention ----------------------------------------------------------------------------------


def fill(app, topic, batches, ts=NOW, index=0, now=NOW):
    """``batches`` batches of one big record each: two to a segment."""
    for _ in range(batches):
        app.produce.produce(INTERNAL, 1, 1000, [(topic, index, records_batch(1, ts, BIG))], now)
    return app.partitions.get((topic, index)).log


def bases(log):
    return [s[0] for s in log.segments_info()]


def next_pass(app, after=NOW):
    """When a retention pass is due (or overdue) at or after ``after``."""
    return max(app.housekeeping.next_pass_ms, after)


def test_retention_ms_deletes_expired_closed_segments_never_the_active_one(app):
    create_topic(app, "r", partitions=1, config={**SEGMENT, "retention_ms": 10_000})
    log = fill(app, "r", 5)
    assert bases(log) == [0, 2, 4]
    now = next_pass(app, NOW + 10_001)
    app.housekeeping.step(now)
    assert bases(log) == [4] and log.log_start_offset == 4 and log.log_end_offset == 5


def test_retention_stops_at_the_first_segment_it_keeps(app):
    create_topic(app, "r", partitions=1, config={**SEGMENT, "retention_ms": 10_000})
    fill(app, "r", 2, ts=NOW)
    log = fill(app, "r", 2, ts=NOW + 50_000)  # recent
    fill(app, "r", 3, ts=NOW)  # old again, but behind a kept segment
    assert bases(log) == [0, 2, 4, 6]
    app.housekeeping.step(next_pass(app, NOW + 50_000))
    assert bases(log) == [2, 4, 6] and log.log_start_offset == 2


def test_retention_bytes_keeps_at_least_that_many_bytes(app):
    create_topic(app, "r", partitions=1, config={**SEGMENT, "retention_bytes": 1000})
    log = fill(app, "r", 7)
    assert bases(log) == [0, 2, 4, 6]
    app.housekeeping.step(next_pass(app))
    assert bases(log) == [4, 6] and log.size_bytes() >= 1000
    assert log.size_bytes() - log.segments_info()[0][1] < 1000  # one segment less would be too few


def test_retention_never_deletes_above_the_high_watermark(cluster):
    app, now = cluster
    commit_records(app, now, {"type": TOPIC_CONFIG_RECORD, "name": "t", "overrides": {**SEGMENT, "retention_ms": 0}})
    log = fill(app, "t", 7, now=now)
    for replica in (2, 3):
        follower_fetch(app, replica, 3, now)  # the high watermark is 3: inside the second segment
    later = next_pass(app, now + 1)
    app.housekeeping.step(later)
    assert bases(log) == [2, 4, 6]
    for replica in (2, 3):
        follower_fetch(app, replica, 7, now)
    app.housekeeping.step(next_pass(app, later + 1))
    assert bases(log) == [6] and log.log_start_offset == 6


def test_a_pass_handles_a_bounded_number_of_partitions_per_turn(app, monkeypatch):
    create_topic(app, "many", partitions=PARTITIONS_PER_TURN + 5)
    app.partitions.open_pending(NOW, everything=True)
    seen = []
    monkeypatch.setattr(app.housekeeping, "_apply_retention", lambda part, settings, now: seen.append(part.tp))
    due = app.housekeeping.next_pass_ms
    assert app.housekeeping.next_deadline(NOW) == due
    app.housekeeping.step(due - 1)
    assert seen == []
    app.housekeeping.step(due)
    assert len(seen) == PARTITIONS_PER_TURN
    assert app.housekeeping.next_deadline(due) == due + 10  # more of the pass next turn
    app.housekeeping.step(due + 10)
    assert sorted(seen) == sorted(app.partitions.online) and len(set(seen)) == len(seen)
    assert app.housekeeping.next_deadline(due + 10) == due + app.config.setting("retention_check_ms")
