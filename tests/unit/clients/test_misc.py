"""Bootstrap parsing, metadata cache, serde."""

from __future__ import annotations

import pytest

from clients.connection import parse_bootstrap
from clients.metadata import ClusterMetadata
from clients.serde import json_deserializer, json_serializer, resolve, SERIALIZERS, str_deserializer, str_serializer


def test_parse_bootstrap(monkeypatch):
    assert parse_bootstrap("a:1, b:2") == ["a:1", "b:2"]
    assert parse_bootstrap(["h:9"]) == ["h:9"]
    monkeypatch.setenv("ZBROKER_BOOTSTRAP", "x:5")
    assert parse_bootstrap(None) == ["x:5"]
    monkeypatch.delenv("ZBROKER_BOOTSTRAP")
    assert parse_bootstrap(None) == ["127.0.0.1:9555"]
    for bad in ("nohost", "h:", ":5", "h:x", ""):
        with pytest.raises(ValueError):
            parse_bootstrap(bad)


META = {
    "cluster_name": "c",
    "controller": 1,
    "controller_epoch": 3,
    "brokers": [{"id": 1, "host": "h1", "port": 1, "alive": True}, {"id": 2, "host": "h2", "port": 2, "alive": False}],
    "topics": [
        {"topic": "a", "error": 0, "internal": False, "partitions": [
            {"partition": 1, "error": 5, "leader": -1, "replicas": [1, 2], "isr": [], "leader_epoch": 4},
            {"partition": 0, "error": 0, "leader": 2, "replicas": [2, 1], "isr": [2], "leader_epoch": 1},
        ]},
        {"topic": "__internal", "error": 0, "internal": True, "partitions": [
            {"partition": 0, "error": 0, "leader": 1, "replicas": [1], "isr": [1], "leader_epoch": 0}]},
        {"topic": "missing", "error": 3, "internal": False, "partitions": []},
    ],
}


def test_metadata_cache():
    m = ClusterMetadata()
    m.update(META, all_topics=True, now=5.0)
    assert m.partition_count("a") == 2 and m.partition_count("missing") is None
    assert m.leader("a", 0) == "h2:2" and m.leader("a", 1) is None
    assert m.topic_errors == {"missing": 3}
    assert m.internal == {"__internal"}
    assert m.broker_addresses() == ["h1:1", "h2:2"]
    assert (m.controller, m.controller_epoch, m.updated_at) == (1, 3, 5.0)
    # a partial update merges
    m.update({"brokers": META["brokers"], "topics": [{"topic": "b", "error": 0, "partitions": [
        {"partition": 0, "error": 0, "leader": 1, "replicas": [1], "isr": [1], "leader_epoch": 0}]}]}, all_topics=False)
    assert m.partition_count("a") == 2 and m.leader("b", 0) == "h1:1"
    m.update({"brokers": [], "topics": []}, all_topics=True)
    assert m.partition_count("a") is None


def test_serde():
    assert json_deserializer(json_serializer({"a": [1, 2]})) == {"a": [1, 2]}
    assert str_deserializer(str_serializer("héllo")) == "héllo"
    assert str_serializer(None) is None and json_serializer(None) is None
    assert resolve("bytes", SERIALIZERS, "x")("é") == "é".encode()
    assert resolve(None, SERIALIZERS, "x") is None
    with pytest.raises(ValueError):
        resolve("yaml", SERIALIZERS, "x")


class _LeadersNet:
    """Two brokers; each reports log positions only for the partition it leads."""

    def __init__(self):
        self.asked = []

    @staticmethod
    def _describe(broker):
        parts = []
        for index, leader, positions in ((0, 1, (0, 5, 7)), (1, 2, (3, 9, 9))):
            start, hw, leo = positions if leader == broker else (-1, -1, -1)
            parts.append({"partition": index, "error": 0, "leader": leader, "replicas": [leader], "isr": [leader],
                          "leader_epoch": 0, "log_start_offset": start, "high_watermark": hw, "log_end_offset": leo})
        return {"error": 0, "topic": "t", "internal": False, "config": {}, "overrides": [], "partitions": parts}

    def request(self, address, kind, fields, timeout_ms=None):
        self.asked.append((address, kind))
        if kind == "metadata":
            return {"error": 0, "brokers": [{"id": 1, "host": "h1", "port": 1}, {"id": 2, "host": "h2", "port": 2}]}, []
        assert kind == "describe_topic"
        return self._describe({"h1:1": 1, "h2:2": 2}[address]), []


def test_admin_describe_topic_gets_every_partitions_positions_from_its_leader():
    from clients.admin import Admin

    admin = Admin.__new__(Admin)  # no sockets: a fake network in place of NetworkClient
    admin.request_timeout_ms, admin._closed, admin._net = 1000, False, _LeadersNet()
    admin._meta = type("Meta", (), {"candidates": staticmethod(lambda: ["h1:1"])})()
    desc = admin.describe_topic("t")
    assert [(p.log_start_offset, p.high_watermark, p.log_end_offset) for p in desc.partitions] == [(0, 5, 7), (3, 9, 9)]
    assert ("h2:2", "describe_topic") in admin._net.asked
