"""The Kafka door's data-path handlers over a real App, without sockets: kio requests in,
response dicts out (what the router encodes), and the service parts they added (leader
epochs of list offsets and consumer fetches, OffsetForLeaderEpoch, max timestamp)."""

import uuid

import pytest
from kio.index import load_request_schema

from storage import TRANSACTIONAL_BIT, build_kafka_batch
from tests.unit.servicefakes import START_MS, commit_records, partition_change, records_batch, settle
from zbroker.context import INTERNAL, Completion
from zbroker.core.fetch import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP, EpochQuery, FetchPartition, FetchRequest, OffsetQuery
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka.codec import build
from zbroker.frontends.kafka.handlers import fetch, init_producer_id, list_offsets, offset_for_leader_epoch, produce
from zbroker.frontends.kafka.router import CLOSE_CONNECTION, NO_REPLY

NOW = START_MS


def request(api_key: int, version: int, **fields):
    """kio's request dataclass of (key, version), built from plain values like a response."""
    return build(load_request_schema(api_key, version), fields)


def call(route, version: int, app, **fields):
    answer = route.call(app, INTERNAL, request(route.api_key, version, **fields), version, NOW)
    return settle(answer) if isinstance(answer, Completion) else answer


def kafka_batch(n=1, ts=NOW, **kw) -> bytes:
    return build_kafka_batch([(ts + i, b"k%d" % i, b"v%d" % i, [("h", b"x")]) for i in range(n)], **kw)


def produce_to(app, version, records, topic="t", partition=0, acks=1, **fields):
    where = {"topic_id": app.control.image.get(topic).topic_id} if version >= 13 else {"name": topic}
    answer = call(produce.ROUTE, version, app, acks=acks, timeout=1000, **fields,
                  topic_data=[{**where, "partition_data": [{"index": partition, "records": records}]}])
    if answer is NO_REPLY or answer is CLOSE_CONNECTION:
        return answer
    (t,) = answer["responses"]
    (p,) = t["partition_responses"]
    return p


def fetch_from(app, version, offset, topic="t", partition=0, **part):
    where = {"topic_id": app.control.image.get(topic).topic_id} if version >= 13 else {"topic": topic}
    answer = call(fetch.ROUTE, version, app, max_wait=0, min_bytes=1, max_bytes=1 << 20, replica_id=-1,
                  topics=[{**where, "partitions": [{"partition": partition, "fetch_offset": offset,
                                                    "partition_max_bytes": 1 << 20, **part}]}], forgotten_topics_data=[])
    (t,) = answer["responses"]
    (p,) = t["partitions"]
    return answer, p


# -- Produce ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [3, 7, 9, 13])
def test_produce_stores_kafka_batches_as_sent_and_answers_offsets(app, version):
    first = produce_to(app, version, kafka_batch(3))
    second = produce_to(app, version, kafka_batch(2))
    assert (first["error_code"], first["base_offset"], first["log_append_time"]) == (0, 0, None)
    assert (second["error_code"], second["base_offset"], second["log_start_offset"]) == (0, 3, 0)
    assert app.partitions.get(("t", 0)).log.log_end_offset == 5


def test_produce_refusals_per_partition(app):
    assert produce_to(app, 9, kafka_batch(2), topic="t", partition=7)["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    bad = bytearray(kafka_batch(2))
    bad[-1] ^= 0xFF
    refused = produce_to(app, 9, bytes(bad))
    assert refused["error_code"] == ErrorCode.CORRUPT_MESSAGE and "crc" in refused["error_message"]
    assert produce_to(app, 9, kafka_batch(1) + kafka_batch(1))["error_code"] == ErrorCode.INVALID_RECORD
    assert produce_to(app, 9, records_batch(2))["error_code"] == ErrorCode.INVALID_RECORD  # magic 122 is not Kafka's
    assert produce_to(app, 9, b"")["error_code"] == ErrorCode.INVALID_RECORD
    unknown = call(produce.ROUTE, 13, app, acks=1, timeout=1000, topic_data=[
        {"topic_id": uuid.uuid4().hex, "partition_data": [{"index": 0, "records": kafka_batch()}]}])
    assert unknown["responses"][0]["partition_responses"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID
    assert app.partitions.get(("t", 0)).log.log_end_offset == 0


def test_transactional_producers_are_refused_with_invalid_txn_state(app):
    by_id = produce_to(app, 9, kafka_batch(1), transactional_id="tx")
    assert by_id["error_code"] == ErrorCode.INVALID_TXN_STATE and "transactions" in by_id["error_message"]
    batch = bytearray(kafka_batch(1, producer_id=7, producer_epoch=0, base_sequence=0))
    batch[22] |= TRANSACTIONAL_BIT  # attributes (low byte); the CRC is left wrong: the door refuses it first
    assert produce_to(app, 9, bytes(batch))["error_code"] == ErrorCode.INVALID_TXN_STATE
    with pytest.raises(RequestError) as refused:  # the router answers it with init_producer_id's error builder
        call(init_producer_id.ROUTE, 4, app, transactional_id="tx", transaction_timeout=60000)
    assert refused.value.code == ErrorCode.INVALID_TXN_STATE


def test_acks_0_gets_no_reply_and_idempotent_resends_are_not_written_twice(app):
    assert produce_to(app, 9, kafka_batch(1), acks=0) is NO_REPLY
    pid = call(init_producer_id.ROUTE, 4, app, transactional_id=None, transaction_timeout=-1)
    assert pid["error_code"] == 0 and pid["producer_id"] >= 0 and pid["producer_epoch"] == 0
    batch = kafka_batch(2, producer_id=pid["producer_id"], producer_epoch=0, base_sequence=0)
    assert produce_to(app, 9, batch)["base_offset"] == 1
    assert produce_to(app, 9, batch)["base_offset"] == 1  # the resend: acknowledged with its first offset
    assert app.partitions.get(("t", 0)).log.log_end_offset == 3
    again = call(init_producer_id.ROUTE, 4, app, transactional_id=None, transaction_timeout=-1,
                 producer_id=pid["producer_id"], producer_epoch=0)
    assert again["producer_id"] != pid["producer_id"] and again["producer_epoch"] == 0  # KIP-360 without a txn id


def test_an_acks_0_produce_that_fails_closes_the_connection_as_kafka_does(app):
    # the producer reads no answer: a dropped connection is how it learns to refresh metadata
    assert produce_to(app, 9, kafka_batch(1), partition=7, acks=0) is CLOSE_CONNECTION
    bad = bytearray(kafka_batch(1))
    bad[-1] ^= 0xFF
    assert produce_to(app, 9, bytes(bad), acks=0) is CLOSE_CONNECTION
    assert produce_to(app, 9, kafka_batch(1), acks=0, transactional_id="tx") is CLOSE_CONNECTION
    assert produce_to(app, 9, kafka_batch(2), acks=0) is NO_REPLY
    assert app.partitions.get(("t", 0)).log.log_end_offset == 2


# -- Fetch --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [4, 11, 12, 13, 16, 18])
def test_fetch_serves_native_batches_as_kafka_v2_with_offsets_and_watermarks(app, version):
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, records_batch(3)), ("t", 0, kafka_batch(2))], NOW)
    answer, p = fetch_from(app, version, 1)  # inside the first batch: the whole batch comes back
    assert (p["error_code"], p["high_watermark"], p["last_stable_offset"], p["log_start_offset"]) == (0, 5, 5, 0)
    assert p["preferred_read_replica"] == -1 and p["aborted_transactions"] is None
    assert answer["session_id"] == 0
    magics = []
    records = p["records"]
    pos = 0
    while pos < len(records):
        magics.append(records[pos + 16])
        pos += int.from_bytes(records[pos + 8:pos + 12], "big") + 12
    assert magics == [2, 2] and pos == len(records)


def test_fetch_checks_the_consumers_leader_epoch_and_unknown_topic_ids(cluster):
    app, now = cluster
    commit_records(app, now, partition_change(1, 1, [1, 2, 3]))
    assert fetch_from(app, 12, 0, current_leader_epoch=0)[1]["error_code"] == ErrorCode.FENCED_LEADER_EPOCH
    assert fetch_from(app, 12, 0, current_leader_epoch=2)[1]["error_code"] == ErrorCode.UNKNOWN_LEADER_EPOCH
    assert fetch_from(app, 12, 0, current_leader_epoch=1)[1]["error_code"] == 0
    moved = fetch_from(app, 12, 0, partition=1)[1]
    assert moved["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert moved["current_leader"] == {"leader_id": 2, "leader_epoch": 0}  # KIP-951
    answer = call(fetch.ROUTE, 13, app, max_wait=500, min_bytes=1, replica_id=-1, forgotten_topics_data=[],
                  topics=[{"topic_id": uuid.uuid4().hex, "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 100}]}])
    assert answer["responses"][0]["partitions"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_ID  # answered at once


def test_a_fetch_with_nothing_new_is_a_long_poll_answered_by_the_next_append(app):
    answer = fetch.ROUTE.call(app, INTERNAL, request(1, 12, max_wait=5000, min_bytes=1, max_bytes=1 << 20, replica_id=-1,
                                                     forgotten_topics_data=[],
                                                     topics=[{"topic": "t", "partitions": [{"partition": 0, "fetch_offset": 0,
                                                                                             "partition_max_bytes": 1 << 20}]}]),
                              12, NOW)
    assert isinstance(answer, Completion) and not answer.done
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, kafka_batch(1))], NOW + 1)
    assert answer.done and answer.value["responses"][0]["partitions"][0]["high_watermark"] == 1


# -- ListOffsets and OffsetForLeaderEpoch ---------------------------------------------------------


def test_list_offsets_answers_epochs_and_the_max_timestamp(cluster):
    app, now = cluster
    part = app.partitions.get(("t", 0))
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, records_batch(2, ts=100)), ("t", 0, records_batch(1, ts=900))], now)
    commit_records(app, now, partition_change(1, 1, [1, 2, 3]))
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, records_batch(1, ts=500))], now)
    for replica in (2, 3):
        part.on_follower_fetch(replica, 4, now)
    part.update_high_watermark()
    answers = app.fetch.list_offsets(INTERNAL, [OffsetQuery("t", 0, ts) for ts in
                                                (EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP, 200, 600)])
    assert [(a.offset, a.timestamp, a.leader_epoch) for a in answers] == [(0, -1, 0), (4, -1, 1), (2, 900, 0), (2, 900, 0), (2, 900, 0)]
    fenced = app.fetch.list_offsets(INTERNAL, [OffsetQuery("t", 0, LATEST_TIMESTAMP, current_leader_epoch=0)])
    assert fenced[0].error == ErrorCode.FENCED_LEADER_EPOCH
    answer = call(list_offsets.ROUTE, 9, app, replica_id=-1, isolation_level=0, topics=[{"name": "t", "partitions": [
        {"partition_index": 0, "timestamp": t} for t in (-4, -5, -3)]}])
    assert [(p["offset"], p["leader_epoch"]) for p in answer["topics"][0]["partitions"]] == [(0, 0), (-1, -1), (2, 0)]


def test_offset_for_leader_epoch_answers_where_each_epoch_ends(cluster):
    app, now = cluster
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, records_batch(3))], now)
    commit_records(app, now, partition_change(1, 2, [1, 2, 3]))
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, records_batch(2))], now)
    ends = app.fetch.offsets_for_leader_epoch(INTERNAL, [EpochQuery("t", 0, e) for e in (0, 1, 2, 3)])
    assert [(a.error, a.leader_epoch, a.end_offset) for a in ends] == [(0, 0, 3), (0, 0, 3), (0, 2, 5), (0, -1, -1)]
    answer = call(offset_for_leader_epoch.ROUTE, 2, app, topics=[{"topic": "t", "partitions": [
        {"partition": 0, "current_leader_epoch": 2, "leader_epoch": 0},
        {"partition": 1, "current_leader_epoch": -1, "leader_epoch": 0}]}])
    assert answer["topics"][0]["partitions"] == [
        {"partition": 0, "error_code": 0, "leader_epoch": 0, "end_offset": 3},
        {"partition": 1, "error_code": ErrorCode.NOT_LEADER_OR_FOLLOWER, "leader_epoch": -1, "end_offset": -1}]
    fenced = call(offset_for_leader_epoch.ROUTE, 4, app, replica_id=-1, topics=[{"topic": "t", "partitions": [
        {"partition": 0, "current_leader_epoch": 1, "leader_epoch": 0}]}])
    assert fenced["topics"][0]["partitions"][0]["error_code"] == ErrorCode.FENCED_LEADER_EPOCH


def test_a_consumer_fetch_with_no_epoch_is_not_checked(cluster):
    app, now = cluster
    commit_records(app, now, partition_change(1, 3, [1, 2, 3]))
    req = FetchRequest([FetchPartition("t", 0, 0)], max_wait_ms=0)
    assert settle(app.fetch.fetch(INTERNAL, req, now)).partitions[0].error == 0
