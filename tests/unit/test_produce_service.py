"""ProduceService through an App without sockets: checks, acks, idempotence, acks=all waits.

The single-node cases commit metadata at once.  The acks=all waits run on broker 1 of three,
elected controller by hand (:func:`~tests.unit.servicefakes.leading_cluster`), where it leads
``t-0`` with brokers 2 and 3 in the ISR: the high watermark only moves when they fetch.
"""

import pytest

from storage import iter_batches
from tests.unit.servicefakes import (
    START_MS, commit_records, create_topic, error_code, follower_fetch, partition_change, records_batch,
    settle,
)
from zbroker.context import INTERNAL, Completion
from zbroker.control.metadata import TOPIC_CONFIG_RECORD
from zbroker.core.produce import ACKS_ALL
from zbroker.errors import ErrorCode

NOW = START_MS
PID = 7


def produce(app, *batches, acks=1, timeout_ms=1000, now=NOW):
    """Produce ``(partition, batch)`` pairs to ``t`` (or ``(topic, partition, batch)``)."""
    return app.produce.produce(INTERNAL, acks, timeout_ms, [b if len(b) == 3 else ("t", *b) for b in batches], now)


def outcome(results):
    """(error, base_offset) per batch."""
    return [(r.error, r.base_offset) for r in results]


def leo(app, index=0):
    return app.partitions.get(("t", index)).log.log_end_offset


def stored_batches(app, index=0):
    part = app.partitions.get(("t", index))
    data = part.log.read(part.log.log_start_offset, 1 << 20).data
    return [(h.base_offset, h.record_count) for _, h in iter_batches(data)]


# -- checks --------------------------------------------------------------------------------


@pytest.mark.parametrize("acks", [2, -2, 3])
def test_acks_other_than_0_1_all_are_refused_and_nothing_is_appended(app, acks):
    assert error_code(lambda: produce(app, (0, records_batch()), acks=acks)) == ErrorCode.INVALID_REQUIRED_ACKS
    assert leo(app) == 0


def test_acks_0_answers_nothing_but_appends(app):
    assert produce(app, (0, records_batch(2)), (1, records_batch(3)), acks=0) is None
    assert (leo(app, 0), leo(app, 1)) == (2, 3)


def test_acks_1_answers_each_batch_with_its_base_offset(app):
    results = produce(app, (0, records_batch(3)), (1, records_batch(1)), (0, records_batch(2)))
    assert [(r.topic, r.partition) for r in results] == [("t", 0), ("t", 1), ("t", 0)]
    assert outcome(results) == [(0, 0), (0, 0), (0, 3)]
    assert [r.log_start_offset for r in results] == [0, 0, 0]
    assert stored_batches(app) == [(0, 3), (3, 2)]


def test_a_batch_over_max_message_bytes_fails_alone(app):
    create_topic(app, "small", partitions=1, config={"max_message_bytes": 200})
    big, fits = records_batch(1, value=b"x" * 300), records_batch(1)
    results = produce(app, ("small", 0, fits), ("small", 0, big), ("small", 0, fits))
    assert outcome(results) == [(0, 0), (ErrorCode.MESSAGE_TOO_LARGE, -1), (0, 1)]
    assert "max_message_bytes=200" in results[1].error_message
    assert app.partitions.get(("small", 0)).log.log_end_offset == 2


def test_an_unknown_topic_or_partition_fails_that_batch(app):
    results = produce(app, (5, records_batch()), ("nope", 0, records_batch()), (0, records_batch()))
    assert outcome(results) == [(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)] * 2 + [(0, 0)]


def test_a_batch_with_a_bad_crc_is_corrupt_and_not_stored(app):
    bad = bytearray(records_batch(2))
    bad[17] ^= 0xFF  # the CRC's first byte
    results = produce(app, (0, bytes(bad)), (1, records_batch()))
    assert outcome(results) == [(ErrorCode.CORRUPT_MESSAGE, -1), (0, 0)]
    assert "crc" in results[0].error_message
    assert leo(app) == 0


def test_a_truncated_batch_is_corrupt(app):
    assert outcome(produce(app, (0, records_batch(2)[:-3]), (0, b"short"))) == [(ErrorCode.CORRUPT_MESSAGE, -1)] * 2


# -- idempotent producers ------------------------------------------------------------------


def idem(n, seq, epoch=0):
    return records_batch(n, producer_id=PID, producer_epoch=epoch, base_sequence=seq)


def test_a_resent_idempotent_batch_gets_its_first_offset_and_is_not_written_twice(app):
    assert outcome(produce(app, (0, idem(3, 0)))) == [(0, 0)]
    produce(app, (0, records_batch(1)))  # someone else's record in between
    assert outcome(produce(app, (0, idem(3, 0)), (0, idem(2, 3)))) == [(0, 0), (0, 4)]
    assert outcome(produce(app, (0, idem(2, 3)))) == [(0, 4)]
    assert stored_batches(app) == [(0, 3), (3, 1), (4, 2)]


def test_a_sequence_gap_is_out_of_order(app):
    produce(app, (0, idem(3, 0)))
    for seq in (5, 2, 1):
        assert outcome(produce(app, (0, idem(1, seq)))) == [(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1)]
    assert leo(app) == 3
    assert outcome(produce(app, (0, idem(1, 3)))) == [(0, 3)]


def test_an_older_producer_epoch_is_fenced(app):
    produce(app, (0, idem(2, 0, epoch=0)))
    assert outcome(produce(app, (0, idem(1, 0, epoch=1)))) == [(0, 2)]  # a new epoch starts at 0
    assert outcome(produce(app, (0, idem(1, 2, epoch=0)))) == [(ErrorCode.INVALID_PRODUCER_EPOCH, -1)]
    assert outcome(produce(app, (0, idem(1, 5, epoch=2)))) == [(ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, -1)]
    assert leo(app) == 3


# -- acks=all ---------------------------------------------------------------------------------


def test_acks_all_is_refused_while_the_isr_is_below_min_insync_replicas(app):
    # an admin refuses min_insync_replicas > replication factor; the setting can still come
    # from the metadata log (written before that check, or under other broker defaults)
    create_topic(app, "strict", partitions=1)
    commit_records(app, START_MS, {"type": TOPIC_CONFIG_RECORD, "name": "strict", "overrides": {"min_insync_replicas": 2}})
    results = settle(produce(app, ("strict", 0, records_batch()), (0, records_batch()), acks=ACKS_ALL))
    assert outcome(results) == [(ErrorCode.NOT_ENOUGH_REPLICAS, -1), (0, 0)]
    assert app.partitions.get(("strict", 0)).log.log_end_offset == 0
    assert outcome(produce(app, ("strict", 0, records_batch()))) == [(0, 0)]  # acks=1 does not ask


def test_acks_all_on_a_lone_leader_completes_at_once(app):
    done = produce(app, (0, records_batch(2)), acks=ACKS_ALL)
    assert isinstance(done, Completion) and done.done
    assert outcome(settle(done)) == [(0, 0)]


def test_acks_all_where_every_batch_failed_is_answered_at_once(app):
    results = produce(app, (9, records_batch()), acks=ACKS_ALL)
    assert outcome(results) == [(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)]


def test_acks_all_waits_until_every_in_sync_follower_has_the_batch(cluster):
    app, now = cluster
    produce(app, (0, records_batch(2)), acks=1, now=now)
    done = produce(app, (0, records_batch(3)), acks=ACKS_ALL, now=now)
    assert not done.done
    follower_fetch(app, 2, 5, now + 1)
    follower_fetch(app, 3, 2, now + 1)  # has the first batch only
    assert not done.done and app.partitions.get(("t", 0)).high_watermark == 2
    follower_fetch(app, 3, 5, now + 2)
    assert outcome(settle(done)) == [(0, 2)]
    assert app.partitions.get(("t", 0)).high_watermark == 5


def test_acks_all_times_out_at_timeout_ms(cluster):
    app, now = cluster
    done = produce(app, (0, records_batch()), acks=ACKS_ALL, timeout_ms=400, now=now)
    follower_fetch(app, 2, 1, now)
    app.tick(now + 399)
    assert not done.done
    app.tick(now + 400)
    (result,) = settle(done)
    assert (result.error, result.base_offset) == (ErrorCode.REQUEST_TIMED_OUT, -1)
    assert leo(app) == 1  # appended all the same: a retry is a duplicate, not lost data


def test_acks_all_answers_each_partition_on_its_own(cluster):
    app, now = cluster
    done = produce(app, (1, records_batch()), (0, records_batch()), acks=ACKS_ALL, timeout_ms=400, now=now)
    assert not done.done  # t-1 is led by broker 2: failed at once, t-0 still waits
    app.tick(now + 400)
    assert outcome(settle(done)) == [(ErrorCode.NOT_LEADER_OR_FOLLOWER, -1), (ErrorCode.REQUEST_TIMED_OUT, -1)]


def test_leadership_moving_while_acks_all_waits_fails_not_leader(cluster):
    app, now = cluster
    done = produce(app, (0, records_batch()), acks=ACKS_ALL, now=now)
    commit_records(app, now + 1, partition_change(2, 1, [1, 2, 3]))
    assert not app.partitions.get(("t", 0)).is_leader
    assert outcome(settle(done)) == [(ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)]


def test_the_isr_shrinking_below_the_minimum_while_waiting_fails_after_append(cluster):
    app, now = cluster
    commit_records(app, now, {"type": TOPIC_CONFIG_RECORD, "name": "t", "overrides": {"min_insync_replicas": 2}})
    done = produce(app, (0, records_batch()), acks=ACKS_ALL, now=now)
    assert not done.done
    commit_records(app, now + 1, partition_change(1, 0, [1]))
    assert outcome(settle(done)) == [(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, -1)]


def test_a_resent_batch_under_acks_all_waits_for_the_whole_original_batch(cluster):
    app, now = cluster
    batch = records_batch(3, producer_id=7, producer_epoch=0, base_sequence=0)
    produce(app, (0, batch), acks=1, now=now)  # the first try: appended, its answer lost
    done = produce(app, (0, batch), acks=ACKS_ALL, now=now)  # the retry: a duplicate
    follower_fetch(app, 2, 1, now + 1)
    follower_fetch(app, 3, 1, now + 1)  # the followers hold only the first of its 3 records
    assert not done.done and app.partitions.get(("t", 0)).high_watermark == 1
    follower_fetch(app, 2, 3, now + 2)
    follower_fetch(app, 3, 3, now + 2)
    assert outcome(settle(done)) == [(0, 0)]
    assert leo(app) == 3
