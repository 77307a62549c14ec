"""Quotas through the Kafka door without sockets: throttle times in Produce and Fetch answers and
the muted connection (KIP-219), over a BrokerNode's app with a recording transport; and
DescribeClientQuotas / AlterClientQuotas (KIP-546)."""

from __future__ import annotations

import io
import struct

import pytest
from kio.index import load_request_schema
from kio.serial import entity_reader, entity_writer

from storage import build_kafka_batch
from tests.unit.test_kafka_framing import Wire
from tests.unit.test_quota_native import NOW, node_with_topic, set_quota
from zbroker.context import Completion, RequestContext
from zbroker.control.security_meta import DEFAULT_QUOTA_PRINCIPAL
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import KafkaDoor, codec
from zbroker.frontends.kafka.handlers import alter_client_quotas, describe_client_quotas

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def n(tmp_path):
    yield from node_with_topic(tmp_path)


# -- throttle times and muting ----------------------------------------------------------------------


def kafka_request(api_key, version, cid, **fields) -> bytes:
    schema = load_request_schema(api_key, version)
    buf = io.BytesIO()
    entity_writer(schema)(buf, codec.build(schema, fields))
    body = struct.pack(">hhih", api_key, version, cid, -1) + (b"\0" if schema.__flexible__ else b"") + buf.getvalue()
    return struct.pack(">i", len(body)) + body


def kafka_produce(cid, size, version=8):
    batch = build_kafka_batch([(NOW, None, b"z" * size, [])])
    return kafka_request(0, version, cid, acks=1, timeout=1000, transactional_id=None,
                         topic_data=[{"name": "t", "partition_data": [{"index": 0, "records": batch}]}])


def kafka_answers(wire, api_key, version):
    schema = codec.response_schema(api_key, version)
    out = [entity_reader(schema)(r, 8 + (1 if schema.__flexible__ else 0))[0] for r in wire.sent]
    wire.sent.clear()
    return out


def test_a_throttled_kafka_answer_goes_out_at_once_and_mutes_the_connection(n):
    assert set_quota(n, DEFAULT_QUOTA_PRINCIPAL, produce_bytes_per_s=1000)["error"] == 0
    door = KafkaDoor(n.node.app, n.node.metrics)
    wire = Wire()
    conn = door.connection(1, "peer", wire)
    conn.data_received(kafka_produce(1, 30_000), n.clock.now)
    (answer,) = kafka_answers(wire, 0, 8)
    throttle = answer.throttle_time.total_seconds() * 1000
    assert answer.responses[0].partition_responses[0].error_code.value == 0 and throttle == 10_000
    assert wire.paused
    conn.data_received(kafka_produce(2, 10), n.clock.now)  # already in the kernel's buffer: read, not run
    assert wire.sent == [] and n.node.app.partitions.online[("t", 0)].high_watermark == 1
    n.advance(9_999)
    assert wire.sent == [] and wire.paused
    n.advance(1)
    (second,) = kafka_answers(wire, 0, 8)
    assert second.responses[0].partition_responses[0].base_offset == 1
    assert second.throttle_time.total_seconds() > 0  # still over: muted again
    assert wire.paused
    n.advance(10_000)
    assert not wire.paused


def test_a_kafka_fetch_over_its_quota_reports_its_throttle(n):
    n.produce(b"q" * 30_000)
    n.replies()
    assert set_quota(n, "User:ANONYMOUS", fetch_bytes_per_s=1000)["error"] == 0
    wire = Wire()
    conn = KafkaDoor(n.node.app, n.node.metrics).connection(1, "peer", wire)
    fetch = kafka_request(1, 11, 1, replica_id=-1, max_wait=0, min_bytes=1, max_bytes=1 << 20, isolation_level=0,
                          session_id=0, session_epoch=-1, rack_id="", forgotten_topics_data=[],
                          topics=[{"topic": "t", "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20,
                                                                 "current_leader_epoch": -1, "log_start_offset": -1}]}])
    conn.data_received(fetch, n.clock.now)
    (answer,) = kafka_answers(wire, 1, 11)
    assert answer.throttle_time.total_seconds() == 10 and len(answer.responses[0].partitions[0].records) > 30_000
    assert wire.paused
    other = KafkaDoor(n.node.app, n.node.metrics).connection(2, "peer", Wire())
    other.data_received(fetch, n.clock.now)  # the same principal, already over its quota
    (empty,) = kafka_answers(other.transport, 1, 11)
    assert empty.throttle_time.total_seconds() == 10 and not empty.responses[0].partitions[0].records
    assert empty.responses[0].partitions[0].high_watermark == 1 and other.transport.paused


# -- DescribeClientQuotas / AlterClientQuotas -------------------------------------------------------


def kafka_call(route, n, version=1, **fields):
    answer = route.call(n.node.app, RequestContext(), codec.build(load_request_schema(route.api_key, version), fields),
                        version, n.clock.now)
    if isinstance(answer, Completion):
        for _ in range(10):
            if answer.done:
                break
            n.advance(1)
        assert answer.error is None
        answer = answer.value
    return answer


def user(name):
    return [{"entity_type": "user", "entity_name": name}]


def test_kafka_alter_and_describe_client_quotas_map_users_and_keys(n):
    answer = kafka_call(alter_client_quotas.ROUTE, n, validate_only=False, entries=[
        {"entity": user("app"), "ops": [{"key": "producer_byte_rate", "value": 2048.0, "remove": False},
                                        {"key": "consumer_byte_rate", "value": 4096.0, "remove": False}]},
        {"entity": user(None), "ops": [{"key": "producer_byte_rate", "value": 1024.0, "remove": False}]},
        {"entity": [{"entity_type": "client-id", "entity_name": "c"}], "ops": []},
        {"entity": user("x"), "ops": [{"key": "request_percentage", "value": 5.0, "remove": False}]},
        {"entity": user("app"), "ops": []},
    ])
    codes = [e["error_code"] for e in answer["entries"]]
    assert codes == [0, 0, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_REQUEST]
    assert "per user only" in answer["entries"][2]["error_message"]
    assert n.call("describe_quotas")["quotas"] == [
        {"principal": DEFAULT_QUOTA_PRINCIPAL, "produce_bytes_per_s": 1024.0, "fetch_bytes_per_s": None},
        {"principal": "User:app", "produce_bytes_per_s": 2048.0, "fetch_bytes_per_s": 4096.0}]

    def described(*components, strict=False):
        got = kafka_call(describe_client_quotas.ROUTE, n, components=list(components), strict=strict)
        return {e["entity"][0]["entity_name"]: {v["key"]: v["value"] for v in e["values"]} for e in got["entries"]}

    assert described() == {None: {"producer_byte_rate": 1024.0},
                           "app": {"producer_byte_rate": 2048.0, "consumer_byte_rate": 4096.0}}
    assert described({"entity_type": "user", "match_type": 0, "match": "app"}).keys() == {"app"}
    assert described({"entity_type": "user", "match_type": 1, "match": None}).keys() == {None}
    assert described({"entity_type": "user", "match_type": 2, "match": None}).keys() == {None, "app"}
    assert described({"entity_type": "client-id", "match_type": 2, "match": None}) == {}
    assert described(strict=True) == {}
    with pytest.raises(RequestError, match="unknown match type 7"):  # the router answers the route's error
        kafka_call(describe_client_quotas.ROUTE, n, components=[{"entity_type": "user", "match_type": 7, "match": None}],
                   strict=False)

    kafka_call(alter_client_quotas.ROUTE, n, validate_only=False, entries=[
        {"entity": user("app"), "ops": [{"key": "producer_byte_rate", "value": 0.0, "remove": True}]}])
    assert described({"entity_type": "user", "match_type": 0, "match": "app"}) == {"app": {"consumer_byte_rate": 4096.0}}
    answer = kafka_call(alter_client_quotas.ROUTE, n, validate_only=True, entries=[
        {"entity": user("app"), "ops": [{"key": "consumer_byte_rate", "value": 0.5, "remove": False}]}])
    assert answer["entries"][0]["error_code"] == ErrorCode.INVALID_REQUEST and "from 1" in answer["entries"][0]["error_message"]
