"""Produce refuses what no reader could read, with Kafka's codes, and never touches internal topics.

Batches are forged with a matching CRC (:mod:`tests.unit.batchforge`), so each case reaches
the rule it tests. After every refusal the partition's log end offset has not moved.
"""

import logging

import pytest

from storage import (COMPRESSION_GZIP, COMPRESSION_ZSTD, CONTROL_BIT, HEADER_SIZE, TIMESTAMP_TYPE_BIT, build_kafka_batch,
                     build_native_batch, validate_produced_batch)
from tests.unit.batchforge import forge
from tests.unit.servicefakes import START_MS, create_topic, single_app
from zbroker.context import INTERNAL
from zbroker.control.topicadmin import OFFSETS_TOPIC
from zbroker.errors import ErrorCode

NOW = START_MS
RECORDS = [(NOW, b"k%d" % i, b"v" * i, {"h": b"x"}) for i in range(3)]


@pytest.fixture
def app(tmp_path):
    app = single_app(tmp_path)
    create_topic(app, "t", partitions=1)
    yield app
    app.close(NOW)


def produce_one(app, batch, topic="t"):
    """(error, base_offset, log end offset after)."""
    [r] = app.produce.produce(INTERNAL, 1, 1000, [(topic, 0, batch)], NOW)
    part = app.partitions.get((topic, 0))
    return r.error, r.base_offset, part.log.log_end_offset if part else None


def kafka_payload(records=RECORDS) -> bytes:
    return build_kafka_batch(records)[HEADER_SIZE:]


def _renumbered_kafka() -> bytes:
    """Three magic-2 records whose offset deltas are 0, 2, 1."""
    good = build_kafka_batch(RECORDS)
    one = [build_kafka_batch([r])[HEADER_SIZE:] for r in RECORDS]
    # each one-record payload has offset delta 0: the varint after the length and ts delta
    # is at byte 3 (length < 64, attributes, ts delta 0); zigzag(2) = 4, zigzag(1) = 2
    swapped = one[0] + one[1][:3] + b"\x04" + one[1][4:] + one[2][:3] + b"\x02" + one[2][4:]
    return forge(good, payload=swapped)


BAD = {
    # a record count the offsets disagree with: the LEO would move by 2**31
    "count 1, last_offset_delta 2**31-1": (forge(record_count=1, last_offset_delta=2**31 - 1), ErrorCode.INVALID_RECORD),
    "count 0, last_offset_delta 2**31-1": (forge(record_count=0, last_offset_delta=2**31 - 1), ErrorCode.INVALID_RECORD),
    "zero records": (forge(record_count=0, last_offset_delta=0), ErrorCode.INVALID_RECORD),
    "negative count": (forge(record_count=-5, last_offset_delta=-6), ErrorCode.INVALID_RECORD),
    "codec 5": (forge(attributes=5), ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
    "codec 7": (forge(attributes=7), ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
    "control batch": (forge(attributes=CONTROL_BIT), ErrorCode.INVALID_RECORD),
    "log-append-time bit": (forge(attributes=TIMESTAMP_TYPE_BIT), ErrorCode.INVALID_RECORD),
    "max_timestamp before base_timestamp": (forge(base_timestamp=NOW, max_timestamp=NOW - 1), ErrorCode.INVALID_RECORD),
    "bad crc": (forge(crc=1), ErrorCode.CORRUPT_MESSAGE),
    "magic 2, garbage records": (forge(build_kafka_batch(RECORDS), payload=b"\xff" * 40), ErrorCode.INVALID_RECORD),
    "magic 2, first record longer than the payload": (forge(build_kafka_batch(RECORDS), payload=b"\x7e" + b"\0" * 10),
                                                      ErrorCode.INVALID_RECORD),
    # a native payload whose msgpack array counts other than record_count: six of these moved
    # a log end to 10,737,418,236 before (found in review)
    "native, count 2**31-1 over one record": (forge(record_count=2**31 - 1, last_offset_delta=2**31 - 2),
                                              ErrorCode.INVALID_RECORD),
    "native, count 3 over one record": (forge(record_count=3, last_offset_delta=2), ErrorCode.INVALID_RECORD),
    "native, payload not an array": (forge(payload=b"\xc1" * 32), ErrorCode.INVALID_RECORD),
}


@pytest.mark.parametrize("name", list(BAD))
def test_a_batch_no_reader_could_read_is_refused_and_the_log_end_does_not_move(app, name):
    batch, code = BAD[name]
    assert produce_one(app, batch) == (code, -1, 0)
    assert produce_one(app, build_native_batch([(NOW, None, b"v", None)])) == (0, 0, 1)  # the partition still serves


def test_the_log_end_stays_sane_after_a_batch_claiming_2_31_offsets(app):
    for batch in (forge(record_count=1, last_offset_delta=2**31 - 1), forge(record_count=0, last_offset_delta=2**31 - 1)):
        produce_one(app, batch)
    part = app.partitions.get(("t", 0))
    assert part.log.log_end_offset == 0 and len(part.log.segments()) == 1


@pytest.mark.parametrize("batch", [
    build_native_batch(RECORDS), build_native_batch(RECORDS, compression=COMPRESSION_ZSTD), build_kafka_batch(RECORDS),
    build_kafka_batch(RECORDS, compression=COMPRESSION_GZIP),
], ids=["native", "native-zstd", "kafka", "kafka-gzip"])
def test_well_formed_batches_of_either_magic_are_appended(app, batch):
    assert produce_one(app, batch) == (0, 0, 3)


@pytest.mark.parametrize("batch", [
    forge(build_kafka_batch(RECORDS), payload=kafka_payload()[:-3]),
    forge(build_kafka_batch(RECORDS), payload=kafka_payload() + b"\x00"),
    forge(build_kafka_batch(RECORDS), record_count=4, last_offset_delta=3),
    _renumbered_kafka(),
], ids=["cut short", "bytes after", "fewer than counted", "deltas out of order"])
def test_magic_2_records_are_never_decoded_on_the_produce_path(batch):
    """A magic-2 batch is judged by its header and its first record's length (its first
    bytes), as a native one is: records that do not parse inside a well-framed batch with the
    producer's CRC pass, and a reader reports them with their offset.  Parsing every record
    cost a Kafka producer half its throughput (docs/architecture.md §9)."""
    assert validate_produced_batch(batch).record_count >= 3


def test_native_payloads_are_never_decoded_on_the_produce_path():
    """A native batch is judged by its header and its msgpack array's length (its first bytes):
    garbage records inside a right-sized array pass (a reader reports them with their offset);
    decoding them would cost every producer."""
    garbage = forge(payload=b"\x91" + b"\xc1" * 32)
    assert validate_produced_batch(garbage).record_count == 1
    big = build_native_batch([(NOW, None, b"v", None)] * 70_000)  # an array 32 header
    assert validate_produced_batch(big).record_count == 70_000


# -- internal topics are the broker's ------------------------------------------------------------


def test_a_client_cannot_produce_to_the_offsets_topic(app):
    app.admin.ensure_offsets_topic(NOW)
    app.tick(NOW)
    assert app.control.image.get(OFFSETS_TOPIC).internal
    part = app.partitions.get((OFFSETS_TOPIC, 0))
    before = part.log.log_end_offset
    [r] = app.produce.produce(INTERNAL, 1, 1000, [(OFFSETS_TOPIC, 0, build_native_batch(RECORDS))], NOW)
    assert r.error == ErrorCode.INVALID_TOPIC_EXCEPTION and "internal topic" in r.error_message
    assert part.log.log_end_offset == before


def test_a_request_of_refused_batches_answers_and_logs_bounded(app, caplog):
    """10,000 refused batches once wrote 10,000 WARNING lines and a reply bigger than the request."""
    caplog.set_level(logging.WARNING, logger="zbroker.core.produce")
    bad = forge(attributes=5)
    results = app.produce.produce(INTERNAL, 1, 1000, [("t", 0, bad)] * 2000, NOW)
    assert all(r.error == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE for r in results)
    assert results[0].error_message and not any(r.error_message for r in results[1:])  # why, once per partition
    lines = [r for r in caplog.records if r.name == "zbroker.core.produce"]
    assert 1 <= len(lines) <= 10
