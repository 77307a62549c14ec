"""api_versions over BrokerNode frames: the answer is the router's own table."""

import msgpack
import pytest

from zbroker import protocol as P
from zbroker.config import single_node_config
from zbroker.node import BrokerNode

PEER = b"\x00client"


@pytest.fixture
def node(tmp_path):
    node = BrokerNode(single_node_config(str(tmp_path / "d")), 1, 1_000)
    yield node
    node.close()


def call(node, header):
    node.handle(PEER, [msgpack.packb(header)], 1_000)
    (( _, frames),) = node.outbox
    node.outbox.clear()
    return msgpack.unpackb(frames[0])


def test_api_versions_lists_every_route_the_router_serves_with_its_versions(node):
    reply = call(node, {"v": 1, "type": "api_versions", "cid": 7})
    assert reply["error"] == 0 and reply["cid"] == 7 and reply["type"] == "api_versions"
    table = node.router.table
    assert [v["type"] for v in reply["versions"]] == sorted(table)
    for v in reply["versions"]:
        assert (v["min"], v["max"]) == table[v["type"]].versions
        assert v["broker_only"] is (v["type"] in P.BROKER_ONLY)
    clients = {v["type"] for v in reply["versions"] if not v["broker_only"]}
    assert {"metadata", "produce", "fetch", "group_heartbeat", "api_versions"} <= clients
    assert "raft_vote" not in clients and "alter_isr" not in clients


def test_api_versions_follows_a_route_whose_range_changes(node, monkeypatch):
    import dataclasses

    fetch = node.router.table["fetch"]
    monkeypatch.setitem(node.router.table, "fetch", dataclasses.replace(fetch, versions=(1, 2)))
    from zbroker.frontends.native import handlers

    monkeypatch.setattr(handlers, "ROUTES", list(node.router.table.values()))
    (entry,) = [v for v in call(node, {"v": 1, "type": "api_versions", "cid": 1})["versions"] if v["type"] == "fetch"]
    assert (entry["min"], entry["max"]) == (1, 2)


@pytest.mark.parametrize("version", [0, 2, 99, "1", True])
def test_api_versions_at_an_unserved_version_is_refused_naming_the_version_and_still_lists_the_versions(node, version):
    """Kafka's ApiVersions (KIP-511): a client of any version learns what the broker speaks."""
    reply = call(node, {"v": version, "type": "api_versions", "cid": 3})
    assert reply["error"] == 35 and reply["error_message"].startswith("protocol version ")
    assert str(version) in reply["error_message"] and "not supported" in reply["error_message"]
    assert reply["versions"] == call(node, {"v": 1, "type": "api_versions", "cid": 4})["versions"]
    assert reply["cid"] == 3 and reply["type"] == "api_versions"


def test_other_types_at_an_unserved_version_are_refused_without_an_answer(node):
    reply = call(node, {"v": 2, "type": "metadata", "cid": 5})
    assert reply["error"] == 35 and "versions" not in reply and "topics" not in reply
    assert not any(route.any_version for kind, route in node.router.table.items() if kind != "api_versions")
