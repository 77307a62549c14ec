"""DeleteRecordsService through an App without sockets: the log start moves up on the leader,
reads and list offsets follow it, a restart keeps it, and every refusal has its error.

Single-node cases (``app``: topic ``t`` of two partitions) have the high watermark at the log
end; the cases about the high watermark and leadership run on broker 1 of three, leading
``t-0`` (``cluster``).
"""

from storage import iter_batches
from tests.unit.servicefakes import START_MS, create_topic, follower_fetch, records_batch, settle, single_app
from tests.unit.test_coordinator import start
from zbroker.context import INTERNAL
from zbroker.control.topicadmin import OFFSETS_TOPIC
from zbroker.core.delete_records import HIGH_WATERMARK, DeleteRecordsResult
from zbroker.core.fetch import EARLIEST_TIMESTAMP, FetchPartition, FetchRequest, OffsetQuery
from zbroker.errors import ErrorCode

NOW = START_MS


def append(app, index, *sizes, topic="t", now=NOW):
    results = app.produce.produce(INTERNAL, 1, 1000, [(topic, index, records_batch(n)) for n in sizes], now)
    assert all(r.error == 0 for r in results), results
    return results


def delete(app, *requests, now=NOW):
    return app.delete_records.delete_records(INTERNAL, list(requests), 30_000, now)


def fetch_one(app, index, offset, topic="t", now=NOW):
    req = FetchRequest([FetchPartition(topic, index, offset)], max_wait_ms=0)
    (entry,) = settle(app.fetch.fetch(INTERNAL, req, now)).partitions
    return entry


def earliest(app, index=0, topic="t"):
    (answer,) = app.fetch.list_offsets(INTERNAL, [OffsetQuery(topic, index, EARLIEST_TIMESTAMP)])
    return answer.offset


def codes(results):
    return [r.error for r in results]


def test_records_below_the_offset_are_gone_from_reads_and_list_offsets(app):
    append(app, 0, 3, 3, 3)
    assert delete(app, ("t", 0, 4)) == [DeleteRecordsResult("t", 0, 4)]
    assert earliest(app) == 4 and app.partitions.get(("t", 0)).log.log_start_offset == 4
    assert fetch_one(app, 0, 3).error == ErrorCode.OFFSET_OUT_OF_RANGE
    entry = fetch_one(app, 0, 4)
    assert (entry.error, entry.log_start_offset) == (0, 4)
    assert [h.base_offset for _, h in iter_batches(entry.data)] == [3, 6]  # from the batch holding 4, as Kafka
    assert append(app, 0, 1)[0].log_start_offset == 4  # produce answers carry it too
    assert earliest(app, 1) == 0  # the other partition is untouched


def test_minus_one_means_the_high_watermark(cluster):
    app, now = cluster
    append(app, 0, 2, 3, now=now)
    for replica in (2, 3):
        follower_fetch(app, replica, 2, now)
    assert app.partitions.get(("t", 0)).high_watermark == 2  # log end 5
    assert delete(app, ("t", 0, HIGH_WATERMARK), now=now)[0].low_watermark == 2


def test_an_offset_past_the_high_watermark_or_negative_is_out_of_range(cluster):
    app, now = cluster
    append(app, 0, 2, 3, now=now)
    for replica in (2, 3):
        follower_fetch(app, replica, 2, now)
    results = delete(app, ("t", 0, 3), ("t", 0, -2), now=now)
    assert codes(results) == [ErrorCode.OFFSET_OUT_OF_RANGE] * 2 and [r.low_watermark for r in results] == [-1, -1]
    assert app.partitions.get(("t", 0)).log.log_start_offset == 0


def test_the_log_start_never_moves_back(app):
    append(app, 0, 5)
    delete(app, ("t", 0, 4))
    assert delete(app, ("t", 0, 2), ("t", 0, 4)) == [DeleteRecordsResult("t", 0, 4)] * 2
    assert earliest(app) == 4


def test_only_the_leader_of_a_known_partition_answers(cluster):
    app, now = cluster
    results = delete(app, ("t", 1, 0), ("t", 9, 0), ("nope", 0, 0), now=now)
    assert codes(results) == [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                              ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
    assert all(r.error_message for r in results)


def test_internal_topics_are_refused(tmp_path):
    app = start(single_app(tmp_path))
    (result,) = delete(app, (OFFSETS_TOPIC, 0, 0))
    assert result.error == ErrorCode.INVALID_TOPIC_EXCEPTION
    app.close(NOW)


def test_a_topic_without_the_delete_policy_is_refused(app):
    create_topic(app, "c", config={"cleanup_policy": "compact"})
    create_topic(app, "cd", config={"cleanup_policy": "compact,delete"})
    append(app, 0, 3, topic="c")
    append(app, 0, 3, topic="cd")
    assert codes(delete(app, ("c", 0, 1), ("cd", 0, 1))) == [ErrorCode.POLICY_VIOLATION, 0]
    assert (earliest(app, topic="c"), earliest(app, topic="cd")) == (0, 1)


def test_a_fetch_parked_below_the_new_start_answers_at_once(app):
    append(app, 0, 3)
    req = FetchRequest([FetchPartition("t", 0, 1)], max_wait_ms=5_000, min_bytes=1 << 20)
    parked = app.fetch.fetch(INTERNAL, req, NOW)
    assert not parked.done
    delete(app, ("t", 0, 3))
    (entry,) = settle(parked).partitions
    assert (entry.error, entry.log_start_offset) == (ErrorCode.OFFSET_OUT_OF_RANGE, 3)


def test_a_restart_keeps_the_log_start(tmp_path):
    app = single_app(tmp_path)
    create_topic(app, "t")
    append(app, 0, 3, 3)
    delete(app, ("t", 0, 4))
    app.close(NOW)
    again = single_app(tmp_path)
    assert earliest(again) == 4 and fetch_one(again, 0, 3).error == ErrorCode.OFFSET_OUT_OF_RANGE
    again.close(NOW)


def test_a_disk_error_answers_kafka_storage_error(app, monkeypatch):
    append(app, 0, 3)
    lg = app.partitions.get(("t", 0)).log

    def broken(offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lg, "delete_records_before", broken)
    (result,) = delete(app, ("t", 0, 1))
    assert (result.error, result.low_watermark) == (ErrorCode.KAFKA_STORAGE_ERROR, -1)
