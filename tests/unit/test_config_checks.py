"""Configs are checked as a whole: typed topic settings (strict: "1000" is not an integer)
and rules across keys, when a config file is loaded and when a topic is created or altered."""

import msgpack
import pytest

from tests.unit.servicefakes import START_MS, RecordingPeers, elect, leading_cluster, settle, single_app
from zbroker.app import App
from zbroker.config import (
    FOLLOWER_FETCH_WAIT_MS,
    MIN_REQUEST_BYTES,
    REQUEST_HEADER_BYTES,
    ConfigError,
    load_config,
    parse_config,
    topic_config_from_text,
)
from zbroker.context import INTERNAL
from zbroker.control.topicadmin import AlterTopicConfig, CreateTopic
from zbroker.core.replication import PARTITION_FETCH_MAX_BYTES, REPLICA_FETCH_MAX_WAIT_MS
from zbroker.errors import ErrorCode, RequestError
from zbroker.node import BrokerNode

NOW = START_MS

#: (key, bad value, words the error must hold besides the key): each is refused everywhere.
BAD_TYPED = [
    ("retention_ms", "1000", ["'1000' (a string)", "an integer"]),
    ("retention_ms", True, ["True", "an integer"]),
    ("retention_ms", 1000.0, ["1000.0", "an integer"]),
    ("retention_ms", -2, ["-2", "an integer >= -1"]),
    ("retention_bytes", 2**64 - 1, ["18446744073709551615", "2**63-1"]),
    ("segment_bytes", "1073741824", ["'1073741824' (a string)", "an integer >= 1024"]),
    ("flush_ms", -1, ["-1", "an integer >= 0"]),
    ("cleanup_policy", "shred", ["'shred'", "one of 'delete'"]),
    ("cleanup_policy", ["delete"], ["['delete']", "one of"]),
    ("unclean_leader_election", "true", ["'true'", "true or false"]),
    ("unclean_leader_election", 1, ["1", "true or false"]),
    ("min_cleanable_dirty_ratio", "0.5", ["'0.5' (a string)", "a number from 0.0 to 1.0"]),
    ("min_cleanable_dirty_ratio", True, ["True", "a number"]),
    ("max_message_bytes", 2**31, ["2147483648", "an integer from 64 to 2147483647"]),
]


@pytest.fixture
def app(tmp_path):
    app = single_app(tmp_path)
    yield app
    app.close(NOW)


def refusal(call) -> RequestError:
    with pytest.raises(RequestError) as info:
        settle(call())
    assert info.value.code == ErrorCode.INVALID_CONFIG
    return info.value


# -- one key at a time: types ---------------------------------------------------------------


@pytest.mark.parametrize("key, value, words", BAD_TYPED)
def test_create_refuses_a_value_of_the_wrong_type_naming_key_value_and_type(app, key, value, words):
    exc = refusal(lambda: app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {key: value}), NOW))
    assert exc.message.startswith(f"{key}: must be ")
    for word in words:
        assert word in exc.message
    assert app.control.image.get("t") is None


@pytest.mark.parametrize("key, value, words", BAD_TYPED)
def test_alter_refuses_a_value_of_the_wrong_type(app, key, value, words):
    settle(app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {"retention_ms": 5000}), NOW))
    exc = refusal(lambda: app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", {key: value}), NOW))
    assert exc.message.startswith(f"{key}: must be ") and all(word in exc.message for word in words)
    assert app.control.image.get("t").overrides == {"retention_ms": 5000}


@pytest.mark.parametrize("key, value, words", [c for c in BAD_TYPED if not isinstance(c[1], int) or c[1] <= 2**63 - 1])
def test_topic_defaults_refuse_a_value_of_the_wrong_type_naming_file_and_key(tmp_path, key, value, words):
    path = tmp_path / "c.toml"
    path.write_text(f"[[broker]]\nid = 1\n[topic_defaults]\n{key} = {toml(value)}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: topic_defaults.{key}: must be ")
    assert all(word in str(info.value) for word in words)


def toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    return repr(value)


def test_the_native_protocol_refuses_a_string_for_an_integer(tmp_path):
    node = BrokerNode(parse_config({"broker": [{"id": 1, "data_dir": str(tmp_path / "d")}]}), 1, NOW)
    try:
        def call(kind, **fields):
            node.handle(b"\x00c", [msgpack.packb({"v": 1, "type": kind, "cid": 1, **fields})], NOW)
            (_, frames), = node.outbox
            node.outbox.clear()
            return msgpack.unpackb(frames[0])

        reply = call("create_topic", topic="t", partitions=1, config={"retention_ms": "1000"})
        assert reply["error"] == ErrorCode.INVALID_CONFIG
        assert reply["error_message"] == "retention_ms: must be an integer >= -1, got '1000' (a string)"
        assert call("create_topic", topic="t", partitions=1, config={"retention_ms": 1000})["error"] == 0
        reply = call("alter_topic_config", topic="t", config={"segment_ms": "60000"})
        assert reply["error"] == ErrorCode.INVALID_CONFIG and "segment_ms" in reply["error_message"]
    finally:
        node.close()


def test_an_unknown_key_is_echoed_bounded(app):
    exc = refusal(lambda: app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {"k" * 100_000: 1}), NOW))
    assert "unknown topic setting" in exc.message and len(exc.message) < 1000


def test_command_line_text_is_converted_to_each_keys_type_only():
    assert topic_config_from_text({"retention_ms": "1000", "unclean_leader_election": "TRUE", "min_cleanable_dirty_ratio": "0.25",
                                   "cleanup_policy": "compact", "segment_ms": "soon", "flush_ms": "-5", "nope": "1"}) == {
        "retention_ms": 1000, "unclean_leader_election": True, "min_cleanable_dirty_ratio": 0.25,
        "cleanup_policy": "compact", "segment_ms": "soon", "flush_ms": -5, "nope": "1"}


# -- rules across keys: at create and alter --------------------------------------------------


def test_create_refuses_min_insync_replicas_above_the_replication_factor(app):
    exc = refusal(lambda: app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {"min_insync_replicas": 2}), NOW))
    assert exc.message.startswith("min_insync_replicas=2, replication_factor=1: ")
    assert "NOT_ENOUGH_REPLICAS" in exc.message and app.control.image.get("t") is None


def test_create_refuses_an_inherited_min_insync_replicas_above_the_replication_factor(tmp_path):
    brokers = [{"id": i, "port": 9500 + 10 * i, "data_dir": f"d{i}"} for i in (1, 2, 3)]
    cfg = parse_config({"broker": brokers, "topic_defaults": {"min_insync_replicas": 2}}, base_dir=tmp_path)
    app = App(cfg, 1, NOW, lambda: NOW, RecordingPeers())
    try:
        now = elect(app, NOW)
        with pytest.raises(RequestError) as info:
            app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1), now)
        assert info.value.code == ErrorCode.INVALID_CONFIG
        assert info.value.message.startswith("min_insync_replicas (default)=2, replication_factor=1: ")
        # set for the topic, it is the topic's to choose
        assert app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {"min_insync_replicas": 1}), now) is not None
    finally:
        app.close(NOW)


def test_alter_checks_min_insync_replicas_against_the_topics_replication_factor(tmp_path):
    app, now = leading_cluster(tmp_path)  # topic t: replication factor 3
    try:
        with pytest.raises(RequestError) as info:
            app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", {"min_insync_replicas": 4}), now)
        assert info.value.code == ErrorCode.INVALID_CONFIG
        assert info.value.message.startswith("min_insync_replicas=4, replication_factor=3: ")
        assert app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", {"min_insync_replicas": 3}), now) is not None
    finally:
        app.close(now)


def test_alter_checks_the_whole_resulting_config(app):
    settle(app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1), NOW))
    exc = refusal(lambda: app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", {"min_insync_replicas": 2}), NOW))
    assert "replication_factor=1" in exc.message and app.control.image.get("t").overrides == {}
    # an unknown key to remove is named too
    exc = refusal(lambda: app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", {"nope": None}), NOW))
    assert exc.message.startswith("nope: unknown topic setting")


def test_max_message_bytes_must_fit_in_a_request(app):
    limit = app.config.setting("max_request_bytes") - REQUEST_HEADER_BYTES
    exc = refusal(lambda: app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {"max_message_bytes": limit + 1}), NOW))
    assert exc.message.startswith(f"max_message_bytes={limit + 1}, max_request_bytes=104857600: ")
    settle(app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {"max_message_bytes": limit}), NOW))
    exc = refusal(lambda: app.admin.alter_topic_config(INTERNAL, AlterTopicConfig("t", {"max_message_bytes": limit + 1}), NOW))
    assert "max_request_bytes" in exc.message


def test_validate_only_checks_the_rules_too(app):
    with pytest.raises(RequestError) as info:
        app.admin.create_topic(INTERNAL, CreateTopic("t", 1, 1, {"min_insync_replicas": 2}, validate_only=True), NOW)
    assert info.value.code == ErrorCode.INVALID_CONFIG


# -- rules across keys: at start ---------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("[cluster]\nheartbeat_ms = 250\nsession_timeout_ms = 400\n",
     "cluster.heartbeat_ms=250, cluster.session_timeout_ms=400: session_timeout_ms must be at least twice heartbeat_ms"),
    ("[cluster]\nheartbeat_ms = 500\nsession_timeout_ms = 500\n", "cluster.heartbeat_ms=500, cluster.session_timeout_ms=500: "),
    ("[cluster]\ngroup_min_session_timeout_ms = 6000\ngroup_max_session_timeout_ms = 5000\n",
     "cluster.group_min_session_timeout_ms=6000, cluster.group_max_session_timeout_ms=5000: the minimum group session"),
    ("[topic_defaults]\nmin_insync_replicas = 2\n",
     "topic_defaults.min_insync_replicas=2, topic_defaults.replication_factor=1: min_insync_replicas must not exceed"),
    ("[cluster]\nmax_request_bytes = 1024\n", f"cluster.max_request_bytes: must be an integer from {MIN_REQUEST_BYTES} to 1073741824, got 1024"),
    ("[cluster]\nmax_request_bytes = 2147483648\n", "cluster.max_request_bytes: must be an integer from"),
    ("[cluster]\nmax_request_bytes = 10485760\n[topic_defaults]\nmax_message_bytes = 10000000\n",
     "topic_defaults.max_message_bytes=10000000, cluster.max_request_bytes=10485760: max_request_bytes must hold"),
    ("[cluster]\nreplica_lag_ms = 400\n", "cluster.replica_lag_ms: must be an integer >= 1000, got 400"),
    ("[cluster]\nsession_timeout_ms = \"3000\"\n", "cluster.session_timeout_ms: must be an integer >= 100, got '3000' (a string)"),
    ("[cluster]\nauto_create_topics = 1\n", "cluster.auto_create_topics: must be true or false, got 1"),
])
def test_a_config_that_cannot_work_is_refused_at_load(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text + '[[broker]]\nid = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_the_default_replication_factor_counts_the_brokers(tmp_path):
    brokers = [{"id": i, "port": 9500 + 10 * i} for i in (1, 2)]
    with pytest.raises(ConfigError, match="topic_defaults.min_insync_replicas=3, topic_defaults.replication_factor=2"):
        parse_config({"broker": brokers, "topic_defaults": {"min_insync_replicas": 3}})
    assert parse_config({"broker": brokers, "topic_defaults": {"min_insync_replicas": 2}}).default_replication_factor() == 2


@pytest.mark.parametrize("dirs, ok", [
    (("a", "a"), False),
    (("a", "a/b"), False),
    (("a/b/..", "a"), False),
    (("a", "ab"), True),
])
def test_brokers_on_one_host_need_data_dirs_of_their_own(tmp_path, dirs, ok):
    brokers = [{"id": i, "port": 9500 + 10 * i, "data_dir": d} for i, d in enumerate(dirs)]
    if ok:
        parse_config({"broker": brokers}, base_dir=tmp_path)
        return
    with pytest.raises(ConfigError, match=r"broker\[1\]\.data_dir: .* overlaps broker\[0\]\.data_dir"):
        parse_config({"broker": brokers}, base_dir=tmp_path)
    other_host = [dict(brokers[0]), {**brokers[1], "host": "10.0.0.2"}]
    parse_config({"broker": other_host}, base_dir=tmp_path)  # another machine: its own disk


def test_the_shipped_configs_pass_every_rule():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[2] / "configs").glob("*.toml")):
        load_config(path)


def test_the_bounds_follow_the_replication_constants():
    assert MIN_REQUEST_BYTES >= PARTITION_FETCH_MAX_BYTES + REQUEST_HEADER_BYTES
    assert FOLLOWER_FETCH_WAIT_MS == REPLICA_FETCH_MAX_WAIT_MS
