"""PartitionManager through an App without sockets: opening in bounded turns, failed opens
retried, roles following the image, removal hooks."""

import pytest

from tests.unit.servicefakes import (
    START_MS, commit_records, create_topic, error_code, partition_change, records_batch, settle, single_app,
)
from zbroker.context import INTERNAL
from zbroker.control.topicadmin import DeleteTopic
from zbroker.core.fetch import FetchPartition, FetchRequest
from zbroker.core.partitions import OPEN_RETRY_MS, OPENS_PER_TURN
from zbroker.errors import ErrorCode

NOW = START_MS
WIDE = 2 * OPENS_PER_TURN + 3


@pytest.fixture
def app(tmp_path):
    app = single_app(tmp_path)
    yield app
    app.close(NOW)


def leader_error(app, topic, index):
    return error_code(lambda: app.partitions.leader(topic, index))


def next_turn(app, now=NOW):
    app.partitions.new_turn()
    app.partitions.open_pending(now)


def long_poll(app, topic, index, now=NOW):
    req = FetchRequest([FetchPartition(topic, index, 0)], max_wait_ms=1000)
    return app.fetch.fetch(INTERNAL, req, now)


def delete(app, topic):
    settle(app.admin.delete_topic(INTERNAL, DeleteTopic(topic), NOW))


# -- opening in turns -------------------------------------------------------------------------


def test_new_partitions_open_a_bounded_number_per_turn(app):
    create_topic(app, "wide", partitions=WIDE)
    pm = app.partitions
    assert sorted(i for _, i in pm.online) == list(range(OPENS_PER_TURN))
    assert list(pm.opening) == [("wide", i) for i in range(OPENS_PER_TURN, WIDE)]
    assert pm.next_open_ms(NOW) == NOW
    pm.open_pending(NOW)  # this turn's budget is spent
    assert len(pm.online) == OPENS_PER_TURN
    next_turn(app)
    assert len(pm.online) == 2 * OPENS_PER_TURN
    next_turn(app)
    assert len(pm.online) == WIDE and not pm.opening and pm.next_open_ms(NOW) is None


def test_a_queued_partition_answers_leader_not_available_until_it_is_open(app):
    create_topic(app, "wide", partitions=OPENS_PER_TURN + 1)
    assert app.partitions.is_opening(("wide", OPENS_PER_TURN))
    assert leader_error(app, "wide", OPENS_PER_TURN) == ErrorCode.LEADER_NOT_AVAILABLE
    (result,) = app.produce.produce(INTERNAL, 1, 1000, [("wide", OPENS_PER_TURN, records_batch())], NOW)
    assert result.error == ErrorCode.LEADER_NOT_AVAILABLE
    app.tick(NOW + 1)  # the App's timer opens what is queued
    assert app.partitions.leader("wide", OPENS_PER_TURN).log.log_end_offset == 0


# -- opens that fail --------------------------------------------------------------------------


@pytest.fixture
def broken(app, monkeypatch):
    """t-1's files cannot be opened (until ``broken.fixed = True``)."""
    real_open = app.logs.open

    class Broken:
        fixed = False
        attempts = 0

        @staticmethod
        def open(tp, *args, **kwargs):
            if tp == ("t", 1) and not Broken.fixed:
                Broken.attempts += 1
                raise OSError(5, "Input/output error")
            return real_open(tp, *args, **kwargs)

    monkeypatch.setattr(app.logs, "open", Broken.open)
    return Broken


def test_a_partition_that_cannot_be_opened_answers_storage_error_and_the_rest_serve(app, broken):
    create_topic(app, "t", partitions=2)
    assert app.partitions.open_failed == {("t", 1): NOW + OPEN_RETRY_MS}
    assert leader_error(app, "t", 1) == ErrorCode.KAFKA_STORAGE_ERROR
    assert app.partitions.leader("t", 0) is not None
    (entry,) = settle(long_poll(app, "t", 1)).partitions  # not "still opening": answered at once
    assert entry.error == ErrorCode.KAFKA_STORAGE_ERROR


def test_a_failed_open_is_retried_after_open_retry_ms(app, broken):
    create_topic(app, "t", partitions=2)
    assert app.partitions.next_open_ms(NOW) == NOW + OPEN_RETRY_MS
    assert app.next_deadline(NOW) <= NOW + OPEN_RETRY_MS
    app.tick(NOW + OPEN_RETRY_MS - 1)
    assert broken.attempts == 1 and app.partitions.open_failed == {("t", 1): NOW + OPEN_RETRY_MS}
    app.tick(NOW + OPEN_RETRY_MS)  # tried again, and still failing: once more later
    assert broken.attempts == 2 and app.partitions.open_failed == {("t", 1): NOW + 2 * OPEN_RETRY_MS}
    broken.fixed = True
    app.tick(NOW + 2 * OPEN_RETRY_MS)
    assert app.partitions.open_failed == {} and app.partitions.leader("t", 1).log.log_end_offset == 0


# -- following the image ----------------------------------------------------------------------


def test_roles_follow_the_image(cluster):
    app, now = cluster
    assert app.partitions.leader("t", 0).is_leader
    assert leader_error(app, "t", 1) == ErrorCode.NOT_LEADER_OR_FOLLOWER
    commit_records(app, now, partition_change(2, 1, [2, 3]), partition_change(1, 1, [1, 2, 3], partition=1))
    part0, part1 = app.partitions.get(("t", 0)), app.partitions.get(("t", 1))
    assert (part0.leader, part0.leader_epoch, part0.isr) == (2, 1, [2, 3])
    assert leader_error(app, "t", 0) == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert app.partitions.leader("t", 1) is part1 and part1.leader_epoch == 1
    commit_records(app, now, partition_change(-1, 2, [2]))
    assert leader_error(app, "t", 0) == ErrorCode.LEADER_NOT_AVAILABLE


def test_deleting_a_topic_runs_the_removal_hooks_for_its_open_partitions(app):
    create_topic(app, "t", partitions=2)
    create_topic(app, "keep", partitions=1)
    removed = []
    app.partitions.on_removed.append(removed.append)
    delete(app, "t")
    assert sorted(removed) == [("t", 0), ("t", 1)]
    assert sorted(app.partitions.online) == [("keep", 0)]
    assert app.logs.get(("t", 0)) is None
    assert leader_error(app, "t", 0) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_deleting_a_topic_still_being_opened_drops_its_queue_and_wakes_its_fetches(app):
    create_topic(app, "wide", partitions=OPENS_PER_TURN + 2)
    removed = []
    app.partitions.on_removed.append(removed.append)
    done = long_poll(app, "wide", OPENS_PER_TURN)
    assert not done.done
    delete(app, "wide")
    assert not app.partitions.opening and not app.partitions.online
    assert len(removed) == OPENS_PER_TURN  # the open ones only
    assert settle(done).partitions[0].error == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class FakeCleaner:
    aborted = False

    def abort(self):
        self.aborted = True


def test_a_removed_partition_loses_its_cleaning_pass(app):
    create_topic(app, "t", partitions=1)
    cleaner = app.housekeeping.cleaners[("t", 0)] = FakeCleaner()  # a compaction pass under way
    delete(app, "t")
    assert cleaner.aborted and app.housekeeping.cleaners == {}
