"""Config files: every mistake is one line naming the file and the key."""

import pytest

from zbroker.config import ConfigError, load_config, parse_config, single_node_config, validate_topic_config


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_shipped_single_config_loads(tmp_path):
    from pathlib import Path

    cfg = load_config(Path(__file__).parents[2] / "configs" / "single.toml")
    assert [b.id for b in cfg.brokers] == [1] and cfg.default_replication_factor() == 1


def test_defaults_and_relative_data_dir(tmp_path):
    cfg = load_config(write(tmp_path, '[[broker]]\nid = 4\ndata_dir = "d"\n'))
    b = cfg.broker(4)
    assert (b.host, b.port, b.gossip_port) == ("127.0.0.1", 9555, 9556)
    assert b.data_dir == str(tmp_path / "d")
    assert cfg.topic_defaults["partitions"] == 3 and cfg.setting("session_timeout_ms") == 3000


@pytest.mark.parametrize(
    "text, words",
    [
        ("[[broker]]\nid = 1\nprot = 5\n", "broker[0].prot: unknown key"),
        ("[[broker]]\nport = 5\n", "broker[0].id: missing"),
        ("[[broker]]\nid = 1\nport = 70000\n", "broker[0].port: must be an integer from 1 to 65535"),
        ("[[broker]]\nid = 1\n[[broker]]\nid = 1\nport = 9\n", "broker[1].id: duplicate broker id 1"),
        ("[[broker]]\nid = 1\n[[broker]]\nid = 2\n", "broker[1].port: port 9555 on 127.0.0.1 is already used"),
        ("[[broker]]\nid = 1\n[topic_defaults]\nretention_ms = \"soon\"\n", "topic_defaults.retention_ms: must be an integer"),
        ("[[broker]]\nid = 1\n[topic_defaults]\ncleanup_policy = \"shred\"\n", "topic_defaults.cleanup_policy: must be one of"),
        ("[[broker]]\nid = 1\n[topic_defaults]\nreplication_factor = 2\n", "replication_factor: 2 exceeds the 1 configured"),
        ("[cluster]\nname = 3\n[[broker]]\nid = 1\n", "cluster.name: must be a non-empty string"),
        ("[[broker]]\nid = 1\nkafka_port = 9555\n", "broker[0].kafka_port: port 9555 on 127.0.0.1 is already used by broker[0].port"),
        ("[[broker]]\nid = 1\nhost = \"0.0.0.0\"\nkafka_port = 9092\n", "broker[0].kafka_host: Kafka clients are sent this address"),
        ("[[broker]]\nid = 1\nkafka_port = 9092\nkafka_host = \"::\"\n", "cannot connect to '::'"),
        ("[[broker]]\nid = 1\nkafka_port = 9092\nkafka_host = \"0\"\n", "cannot connect to '0'"),
        ("[[broker]]\nid = 1\nkafka_port = 9092\nkafka_host = \"::0\"\n", "cannot connect to '::0'"),
        ("[[broker]]\nid = 1\nkafka_port = 9092\nkafka_host = \"[::]\"\n", "cannot connect to '[::]'"),
        ("[[broker]]\nid = 1\nkafka_port = \"9092\"\n", "broker[0].kafka_port: must be an integer"),
        ("[clutser]\n[[broker]]\nid = 1\n", "clutser: unknown section"),
        ("[cluster]\n", "broker: missing"),
        ("[[broker]\nid=1", "not valid TOML"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path) + ": ")
    assert words in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.toml")


def test_topic_overrides_are_validated_and_normalised():
    assert validate_topic_config({"retention_ms": "1000", "unclean_leader_election": "true"}) == {
        "retention_ms": 1000,
        "unclean_leader_election": True,
    }
    with pytest.raises(ConfigError, match="segment_bytes: must be an integer >= 1024"):
        validate_topic_config({"segment_bytes": 10})
    with pytest.raises(ConfigError, match="retension_ms: unknown topic setting"):
        validate_topic_config({"retension_ms": 1})


def test_effective_topic_settings_layer_overrides_on_defaults():
    cfg = parse_config({"broker": [{"id": 1}], "topic_defaults": {"retention_ms": 50}})
    assert cfg.topic_settings()["retention_ms"] == 50
    assert cfg.topic_settings({"retention_ms": 7})["retention_ms"] == 7


def test_kafka_listener_keys_default_to_none_and_the_broker_host(tmp_path):
    cfg = load_config(write(tmp_path, '[[broker]]\nid = 1\nhost = "10.0.0.5"\nkafka_port = 9092\n[[broker]]\nid = 2\nport = 7\n'))
    assert (cfg.broker(1).kafka_port, cfg.broker(1).kafka_advertised_host) == (9092, "10.0.0.5")
    assert cfg.broker(2).kafka_port is None
    cfg = single_node_config("d", kafka=("127.0.0.2", 19092))
    assert (cfg.brokers[0].kafka_advertised_host, cfg.brokers[0].kafka_port) == ("127.0.0.2", 19092)


def test_single_node_defaults():
    cfg = single_node_config()
    assert cfg.brokers[0].address == "127.0.0.1:9555" and cfg.brokers[0].data_dir == "zbroker-data"


@pytest.mark.parametrize("host", ["0.0.0.0", "0", "0.0", "0x0", "::", "[::]", "::0", "0:0:0:0:0:0:0:0", ""])
def test_every_spelling_of_the_wildcard_address_is_one(host):
    from zbroker.config import is_wildcard_host
    assert is_wildcard_host(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "10.0.0.5", "broker1.example.com", "0.0.0.1"])
def test_addresses_clients_can_reach_are_not_wildcards(host):
    from zbroker.config import is_wildcard_host
    assert not is_wildcard_host(host)
