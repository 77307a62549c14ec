"""Admin client against a real broker process."""

from __future__ import annotations

import pytest

from clients import Admin, BrokerInfo, ClusterDescription, PartitionInfo, TopicDescription
from zbroker.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)


@pytest.mark.timeout(30)
def test_topic_lifecycle(broker):
    with Admin(bootstrap=broker.bootstrap) as admin:
        admin.create_topic("orders", partitions=6, config={"retention_ms": 86_400_000})
        assert "orders" in admin.list_topics()
        desc = admin.describe_topic("orders")
        assert isinstance(desc, TopicDescription) and desc.name == "orders"
        assert [p.partition for p in desc.partitions] == list(range(6))
        assert all(isinstance(p, PartitionInfo) and p.leader >= 0 and p.high_watermark == 0 for p in desc.partitions)
        assert desc.config["retention_ms"] == 86_400_000
        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topic("orders")
        admin.alter_topic_config("orders", {"retention_ms": 1000})
        assert admin.describe_topic("orders").config["retention_ms"] == 1000
        with pytest.raises(InvalidConfigError):
            admin.alter_topic_config("orders", {"no_such_key": 1})
        admin.delete_topic("orders")
        assert "orders" not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.describe_topic("orders")
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.delete_topic("orders")


@pytest.mark.timeout(30)
def test_bad_create_and_cluster(broker):
    with Admin(bootstrap=broker.bootstrap) as admin:
        with pytest.raises(InvalidPartitionsError):
            admin.create_topic("bad", partitions=0)
        cluster = admin.describe_cluster()
        assert isinstance(cluster, ClusterDescription)
        assert cluster.brokers and isinstance(cluster.brokers[0], BrokerInfo)
        assert f"{cluster.brokers[0].host}:{cluster.brokers[0].port}" == broker.bootstrap
        assert admin.list_groups() == []  # no group has committed or joined yet


@pytest.mark.timeout(30)
def test_bootstrap_from_env(broker, monkeypatch):
    monkeypatch.setenv("ZBROKER_BOOTSTRAP", f"127.0.0.1:1,{broker.bootstrap}")  # first entry is dead
    with Admin(request_timeout_ms=10_000) as admin:
        admin.create_topic("envtopic", partitions=1)
        assert "envtopic" in admin.list_topics()
