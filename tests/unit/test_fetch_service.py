"""FetchService through an App without sockets: reads, long polls, follower fetches, list_offsets.

Single-node cases have the high watermark at the log end after every append; the cases about
reading below the high watermark and about followers run on broker 1 of three, leading ``t-0``
(:func:`~tests.unit.servicefakes.leading_cluster`).
"""

import pytest

from storage import iter_batches
from tests.unit.servicefakes import (
    START_MS, commit_records, create_topic, error_code, follower_fetch, partition_change, records_batch,
    settle,
)
from zbroker.context import INTERNAL, Completion
from zbroker.core.fetch import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_WAIT_LIMIT_MS, FetchPartition, FetchRequest, OffsetQuery
from zbroker.core.partitions import OPENS_PER_TURN
from zbroker.errors import ErrorCode

NOW = START_MS


def append(app, index, *sizes, topic="t", ts=NOW, now=NOW):
    """Batches of ``sizes`` records each, acks=1."""
    results = app.produce.produce(INTERNAL, 1, 1000, [(topic, index, records_batch(n, ts)) for n in sizes], now)
    assert all(r.error == 0 for r in results), results


def fetch(app, *specs, now=NOW, **fields):
    """Fetch ``(partition, offset)`` pairs of ``t`` (or FetchPartitions); answered at once
    unless ``max_wait_ms`` is given."""
    parts = [s if isinstance(s, FetchPartition) else FetchPartition("t", *s) for s in specs]
    return app.fetch.fetch(INTERNAL, FetchRequest(parts, **{"max_wait_ms": 0, **fields}), now)


def batches(entry):
    """(base_offset, record_count) of each batch an answer holds."""
    return [(h.base_offset, h.record_count) for _, h in iter_batches(entry.data)]


# -- reads ----------------------------------------------------------------------------------


def test_reads_whole_batches_from_the_one_holding_the_offset(app):
    append(app, 0, 3, 2, 4)
    (entry,) = settle(fetch(app, (0, 4))).partitions
    assert batches(entry) == [(3, 2), (5, 4)]
    assert (entry.error, entry.high_watermark, entry.log_start_offset) == (0, 9, 0)
    (at_end,) = settle(fetch(app, (0, 9))).partitions
    assert (at_end.error, at_end.data) == (0, b"")


def test_a_consumer_reads_only_below_the_high_watermark_a_follower_above_it(cluster):
    app, now = cluster
    append(app, 0, 2, 3, now=now)
    for replica in (2, 3):
        follower_fetch(app, replica, 2, now)
    (entry,) = settle(fetch(app, (0, 0), now=now)).partitions
    assert batches(entry) == [(0, 2)] and entry.high_watermark == 2
    (above,) = settle(fetch(app, (0, 2), now=now)).partitions
    assert (above.error, above.data) == (0, b"")
    assert batches(follower_fetch(app, 2, 2, now)) == [(2, 3)]


def test_at_least_one_whole_batch_even_above_max_bytes(app):
    append(app, 0, 3, 3)
    append(app, 1, 1)
    (entry,) = settle(fetch(app, FetchPartition("t", 0, 0, max_bytes=1))).partitions
    assert batches(entry) == [(0, 3)]
    first, second = settle(fetch(app, (0, 0), (1, 0), max_bytes=1)).partitions
    assert batches(first) == [(0, 3)]
    assert (second.error, second.data, second.high_watermark) == (0, b"", 1)  # the request's budget is spent


@pytest.mark.parametrize("specs, fields", [
    ([(0, 0)], {"max_bytes": -1}),
    ([FetchPartition("t", 0, 0, max_bytes=-1)], {}),
    ([(0, 0)], {"max_wait_ms": MAX_WAIT_LIMIT_MS + 1}),
])
def test_bad_limits_are_an_invalid_request(app, specs, fields):
    assert error_code(lambda: fetch(app, *specs, **fields)) == ErrorCode.INVALID_REQUEST


def test_the_longest_wait_is_allowed(app):
    append(app, 0, 1)
    assert batches(settle(fetch(app, (0, 0), max_wait_ms=MAX_WAIT_LIMIT_MS)).partitions[0]) == [(0, 1)]


def test_an_offset_out_of_range_fails_that_partition_only(app):
    append(app, 0, 3)
    append(app, 1, 1)
    past, fine = settle(fetch(app, (0, 4), (1, 0), max_wait_ms=1000)).partitions  # an error answers at once
    assert past.error == ErrorCode.OFFSET_OUT_OF_RANGE and past.data == b""
    assert fine.error == 0 and batches(fine) == [(0, 1)]


def test_an_offset_below_the_log_start_is_out_of_range(app):
    create_topic(app, "small", partitions=1, config={"segment_bytes": 1024})
    for _ in range(6):
        append(app, 0, 1, topic="small")
        app.partitions.get(("small", 0)).log.roll(NOW)
    log = app.partitions.get(("small", 0)).log
    assert log.delete_segments_before(3) == 3 and log.log_start_offset == 3
    (below,) = settle(fetch(app, FetchPartition("small", 0, 2))).partitions
    (start,) = settle(fetch(app, FetchPartition("small", 0, 3))).partitions
    assert below.error == ErrorCode.OFFSET_OUT_OF_RANGE and below.log_start_offset == 3
    assert start.error == 0 and batches(start)[0] == (3, 1)


# -- long polls -----------------------------------------------------------------------------


def test_a_long_poll_is_completed_by_an_append_to_its_partition(app):
    done = fetch(app, (1, 0), max_wait_ms=1000)
    assert isinstance(done, Completion) and not done.done
    append(app, 0, 1)
    assert not done.done  # another partition
    append(app, 1, 2)
    assert batches(settle(done).partitions[0]) == [(0, 2)]


def test_an_abandoned_long_poll_leaves_the_purgatory(app):
    before = len(app.purgatory)
    done = fetch(app, (1, 0), max_wait_ms=1000)
    assert len(app.purgatory) == before + 1
    done.abandon()  # its client went away
    assert len(app.purgatory) == before and not done.done
    append(app, 1, 2)
    assert not done.done  # never answered: nobody waits


def test_a_long_poll_expires_at_max_wait_with_empty_data(app):
    done = fetch(app, (0, 0), max_wait_ms=1000)
    app.tick(NOW + 999)
    assert not done.done
    app.tick(NOW + 1000)
    (entry,) = settle(done).partitions
    assert (entry.error, entry.data, entry.high_watermark) == (0, b"", 0)


def test_min_bytes_waits_for_enough(app):
    size = len(records_batch(1))
    done = fetch(app, (0, 0), (1, 0), max_wait_ms=1000, min_bytes=2 * size)
    append(app, 0, 1)
    assert not done.done
    append(app, 1, 1)
    assert [batches(e) for e in settle(done).partitions] == [[(0, 1)], [(0, 1)]]


def test_an_unknown_partition_ends_a_long_poll_at_once(app):
    (entry,) = settle(fetch(app, (7, 0), max_wait_ms=1000)).partitions
    assert entry.error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_a_partition_still_being_opened_does_not_end_a_long_poll(app):
    create_topic(app, "wide", partitions=OPENS_PER_TURN + 2)
    tp = ("wide", OPENS_PER_TURN + 1)
    assert app.partitions.is_opening(tp)
    done = fetch(app, FetchPartition(*tp, 0), max_wait_ms=1000)
    assert not done.done
    app.tick(NOW + 1)  # opened now: still nothing to read
    assert app.partitions.get(tp) is not None and not done.done
    append(app, tp[1], 2, topic="wide", now=NOW + 2)
    assert batches(settle(done).partitions[0]) == [(0, 2)]


def test_a_long_poll_that_expires_while_its_partition_is_opening_says_leader_not_available(app):
    create_topic(app, "wide", partitions=OPENS_PER_TURN + 1)
    done = fetch(app, FetchPartition("wide", OPENS_PER_TURN, 0), max_wait_ms=1000)
    app.purgatory.expire(NOW + 1000)
    assert settle(done).partitions[0].error == ErrorCode.LEADER_NOT_AVAILABLE


# -- follower fetches -------------------------------------------------------------------------


def test_a_follower_fetch_records_its_position(cluster):
    app, now = cluster
    append(app, 0, 3, now=now)
    part = app.partitions.get(("t", 0))
    assert batches(follower_fetch(app, 2, 0, now)) == [(0, 3)]
    assert (part.followers[2].leo, part.high_watermark) == (0, 0)
    entry = follower_fetch(app, 2, 3, now + 5)
    assert (part.followers[2].leo, part.followers[2].last_fetch_ms) == (3, now + 5)
    assert entry.high_watermark == 0  # broker 3, in the ISR, has not fetched yet
    assert follower_fetch(app, 3, 3, now + 6).high_watermark == 3


def test_a_follower_fetch_is_checked_by_leader_epoch(cluster):
    app, now = cluster
    commit_records(app, now, partition_change(1, 1, [1, 2, 3]))  # same leader, epoch 1
    part = app.partitions.get(("t", 0))
    assert follower_fetch(app, 2, 0, now, epoch=0).error == ErrorCode.FENCED_LEADER_EPOCH
    assert follower_fetch(app, 2, 0, now, epoch=2).error == ErrorCode.UNKNOWN_LEADER_EPOCH
    assert follower_fetch(app, 4, 0, now, epoch=1).error == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert part.followers[2].leo == -1  # refused fetches record nothing
    assert follower_fetch(app, 2, 0, now, epoch=1).error == 0
    assert follower_fetch(app, 2, 5, now, epoch=-1).error == ErrorCode.OFFSET_OUT_OF_RANGE  # past the log end


def test_a_follower_whose_last_epoch_disagrees_is_told_where_to_truncate(cluster):
    app, now = cluster
    append(app, 0, 3, now=now)  # epoch 0: offsets 0-2
    commit_records(app, now, partition_change(1, 1, [1, 2, 3]))
    append(app, 0, 2, now=now)  # epoch 1: offsets 3-4
    part = app.partitions.get(("t", 0))
    stale = follower_fetch(app, 2, 5, now, epoch=1, last_fetched_epoch=0)  # holds 3-4 from another epoch-0 leader
    assert (stale.error, stale.diverging, stale.data) == (0, [0, 3], b"")
    assert part.followers[2].leo == -1
    ahead = follower_fetch(app, 2, 6, now, epoch=1, last_fetched_epoch=4)  # an epoch this leader never saw
    assert ahead.diverging == [1, 5]
    agreed = follower_fetch(app, 2, 3, now, epoch=1, last_fetched_epoch=0)
    assert agreed.diverging is None and batches(agreed) == [(3, 2)]
    assert part.followers[2].leo == 3


# -- list_offsets -----------------------------------------------------------------------------


def offsets(app, *queries, index=0):
    answers = app.fetch.list_offsets(INTERNAL, [OffsetQuery("t", index, q) for q in queries])
    return [(a.error, a.offset, a.timestamp) for a in answers]


def test_list_offsets_earliest_latest_and_by_timestamp(app):
    for ts, n in ((100, 2), (200, 1), (300, 1)):
        append(app, 0, n, ts=ts)
    assert offsets(app, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP) == [(0, 0, -1), (0, 4, -1)]
    assert offsets(app, 50, 100, 150, 300, 301) == [(0, 0, 100), (0, 0, 100), (0, 2, 200), (0, 3, 300), (0, -1, -1)]
    assert offsets(app, LATEST_TIMESTAMP, index=5) == [(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1, -1)]


def test_list_offsets_sees_only_below_the_high_watermark_and_only_on_the_leader(cluster):
    app, now = cluster
    append(app, 0, 2, ts=100, now=now)
    assert offsets(app, LATEST_TIMESTAMP, 100) == [(0, 0, -1), (0, -1, -1)]
    for replica in (2, 3):
        follower_fetch(app, replica, 2, now)
    assert offsets(app, LATEST_TIMESTAMP, 100) == [(0, 2, -1), (0, 0, 100)]
    assert offsets(app, LATEST_TIMESTAMP, index=1) == [(ErrorCode.NOT_LEADER_OR_FOLLOWER, -1, -1)]


# -- damage (issue 10 point 5) ----------------------------------------------------------------


def test_damaged_range_answers_corrupt_message_with_where_it_ends(app):
    append(app, 0, 2, 3, 4)  # batches [0, 2) [2, 5) [5, 9)
    lg = app.partitions.get(("t", 0)).log
    lg.damaged.add(2, 5)  # as recovery records a damaged batch
    (before,) = settle(fetch(app, (0, 0))).partitions
    assert before.error == 0 and batches(before) == [(0, 2)]  # stops before the hole
    (inside,) = settle(fetch(app, (0, 3), (1, 0))).partitions[:1]
    assert (inside.error, inside.damaged, inside.data) == (ErrorCode.CORRUPT_MESSAGE, [2, 5], b"")
    (after,) = settle(fetch(app, (0, 5))).partitions
    assert after.error == 0 and batches(after) == [(5, 4)]  # seek past it works


def test_framing_damage_found_by_a_fetch_is_recorded_not_a_traceback(app):
    append(app, 0, 2, 3, 4)
    lg = app.partitions.get(("t", 0)).log
    seg = lg.active_segment
    pos = seg.find_position(2)
    with open(seg.log_path, "r+b") as f:  # the length field of batch [2, 5)
        f.seek(pos + 8)
        f.write(b"\xff\xff\xff\x7f")
    (entry,) = settle(fetch(app, (0, 2))).partitions
    # a broken length field: nothing after it is provable; the log end does not move back
    assert (entry.error, entry.damaged) == (ErrorCode.CORRUPT_MESSAGE, [2, 9])
    assert lg.damaged.ranges == [(2, 9)] and lg.log_end_offset == 9
    (after,) = settle(fetch(app, (0, 9))).partitions
    assert after.error == 0 and batches(after) == []


def test_disk_error_answers_kafka_storage_error(app, monkeypatch):
    append(app, 0, 2)
    lg = app.partitions.get(("t", 0)).log

    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(lg.active_segment, "read_batches", broken)
    (entry,) = settle(fetch(app, (0, 0))).partitions
    assert entry.error == ErrorCode.KAFKA_STORAGE_ERROR
