"""ReplicaFetcher (the follower side of replication): which fetches go out and what their answers
do to real partitions over real logs.  Pure: time passed in, nothing sent."""

import pytest

from storage import Log, LogConfig, build_native_batch
from zbroker.context import INTERNAL
from zbroker.core.fetch import FetchedPartition, FetchResult
from zbroker.core.partition import Partition
from zbroker.core.replication import METADATA_BACKOFF_MS, REPLICA_FETCH_MAX_WAIT_MS, ReplicaFetcher
from zbroker.errors import ErrorCode
from tests.unit.batchforge import forge
from tests.unit.servicefakes import follower_fetch, records_batch

ME = 2
NOW = 1_000
LIVE = {1, 2, 3}


@pytest.fixture
def logs(tmp_path):
    opened = []

    def make(name):
        lg = Log(tmp_path / name, LogConfig(), 0)
        opened.append(lg)
        return lg

    yield make
    for lg in opened:
        lg.close()


@pytest.fixture
def parts(logs):
    """Broker 2 follows t-0 and t-1 on broker 1 and u-0 on broker 3, and leads v-0."""
    out = {}
    for topic, index, leader in (("t", 0, 1), ("t", 1, 1), ("u", 0, 3), ("v", 0, ME)):
        p = Partition(topic, index, logs(f"{topic}-{index}"), ME)
        p.apply_metadata(leader, 4, [1, 2, 3], [1, 2, 3], NOW)
        out[p.tp] = p
    return out


def append(part, n, epoch, now=NOW):
    """Records written as a leader of ``epoch`` would."""
    part.log.append(build_native_batch([(now, None, b"r", None)] * n), now, leader_epoch=epoch)


def by_leader(requests):
    return {leader: [(p.topic, p.partition) for p in req.partitions] for _, leader, req in requests}


def answer(fetcher, seq, parts, *entries, error=0, now=NOW):
    return fetcher.on_response(seq, error, None if not error else "failed", FetchResult(list(entries)), parts, now)


def test_one_fetch_per_leader_covers_its_partitions(parts):
    append(parts[("t", 1)], 3, epoch=4)
    fetcher = ReplicaFetcher(ME)
    requests = fetcher.requests(parts, LIVE, NOW)
    assert by_leader(requests) == {1: [("t", 0), ("t", 1)], 3: [("u", 0)]}  # v-0 is led here: not fetched
    (req,) = [r for _, leader, r in requests if leader == 1]
    assert req.replica_id == ME and req.max_wait_ms == REPLICA_FETCH_MAX_WAIT_MS
    assert [(p.offset, p.leader_epoch, p.last_fetched_epoch) for p in req.partitions] == [(0, 4, -1), (3, 4, 4)]  # an empty log has no last epoch
    assert fetcher.requests(parts, LIVE, NOW + 10) == []  # both in flight


def test_no_fetch_goes_to_a_leader_that_is_not_alive(parts):
    assert by_leader(ReplicaFetcher(ME).requests(parts, {1, 2}, NOW)) == {1: [("t", 0), ("t", 1)]}


def test_a_new_partition_gets_its_own_fetch_while_one_is_in_flight(parts, logs):
    fetcher = ReplicaFetcher(ME)
    fetcher.requests(parts, LIVE, NOW)
    new = Partition("w", 0, logs("w-0"), ME)
    new.apply_metadata(1, 0, [1, 2], [1, 2], NOW)
    parts[new.tp] = new
    assert by_leader(fetcher.requests(parts, LIVE, NOW + 1)) == {1: [("w", 0)]}


def test_a_partition_that_moved_to_another_leader_is_fetched_there_at_once(parts):
    fetcher = ReplicaFetcher(ME)
    fetcher.requests(parts, LIVE, NOW)
    parts[("t", 0)].apply_metadata(3, 5, [1, 2, 3], [2, 3], NOW + 1)
    assert by_leader(fetcher.requests(parts, LIVE, NOW + 1)) == {3: [("t", 0)]}


def test_a_lost_fetch_is_sent_again_after_the_timeout(parts):
    fetcher = ReplicaFetcher(ME, request_timeout_ms=1_000)
    fetcher.requests(parts, LIVE, NOW)
    limit = NOW + REPLICA_FETCH_MAX_WAIT_MS + 1_000
    assert fetcher.requests(parts, LIVE, limit) == []
    assert by_leader(fetcher.requests(parts, LIVE, limit + 1)) == {1: [("t", 0), ("t", 1)], 3: [("u", 0)]}


def test_an_answer_appends_the_leaders_batches_and_moves_the_high_watermark(parts, logs):
    leader_log = Partition("t", 0, logs("leader-t-0"), 1)
    append(leader_log, 3, epoch=4)
    append(leader_log, 2, epoch=4)
    data = leader_log.log.read(0, 1 << 20).data
    fetcher = ReplicaFetcher(ME)
    ((seq, _, _),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 1]
    moved = answer(fetcher, seq, parts, FetchedPartition("t", 0, 0, 4, 0, None, data), FetchedPartition("t", 1, 0, 0, 0))
    follower = parts[("t", 0)]
    assert moved == [("t", 0)]
    assert follower.log.log_end_offset == 5 and follower.high_watermark == 4
    assert follower.log.leader_epoch_cache.latest_epoch == 4
    assert answer(fetcher, seq, parts, FetchedPartition("t", 0, 0, 5, 0, None, data)) == []  # answered already: ignored
    assert follower.high_watermark == 4
    ((seq2, leader, req),) = [r for r in fetcher.requests(parts, LIVE, NOW + 1) if r[1] == 1]
    assert req.partitions[0].offset == 5  # fetches on from the new log end


def test_a_failed_fetch_changes_nothing_and_is_sent_again(parts):
    fetcher = ReplicaFetcher(ME)
    ((seq, _, _),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 3]
    assert answer(fetcher, seq, parts, error=int(ErrorCode.REQUEST_TIMED_OUT)) == []
    assert by_leader(fetcher.requests(parts, LIVE, NOW + 1)) == {3: [("u", 0)]}


def test_an_answer_for_a_partition_that_moved_meanwhile_is_ignored(parts, logs):
    leader_log = Partition("u", 0, logs("leader-u-0"), 3)
    append(leader_log, 2, epoch=4)
    fetcher = ReplicaFetcher(ME)
    ((seq, _, _),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 3]
    parts[("u", 0)].apply_metadata(1, 5, [1, 2, 3], [1, 2], NOW)
    entry = FetchedPartition("u", 0, 0, 2, 0, None, leader_log.log.read(0, 1 << 20).data)
    assert answer(fetcher, seq, parts, entry) == [] and parts[("u", 0)].log.log_end_offset == 0


def test_diverging_truncates_to_where_both_copies_of_the_epoch_end(parts):
    part = parts[("t", 0)]
    append(part, 3, epoch=1)  # offsets 0-4 in epoch 1, in two batches
    append(part, 2, epoch=1)
    append(part, 3, epoch=2)  # 5-7 in epoch 2, which the leader never had
    part.high_watermark = 0
    fetcher = ReplicaFetcher(ME)
    ((seq, _, req),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 1]
    assert req.partitions[0].last_fetched_epoch == 2
    assert answer(fetcher, seq, parts, FetchedPartition("t", 0, 0, 4, 0, [1, 6])) == []
    assert part.log.log_end_offset == 5  # the leader's epoch 1 went on to 6, ours ended at 5: keep 0-4
    assert part.log.leader_epoch_cache.latest_epoch == 1
    ((seq, _, req),) = [r for r in fetcher.requests(parts, LIVE, NOW + 1) if r[1] == 1]
    assert (req.partitions[0].offset, req.partitions[0].last_fetched_epoch) == (5, 1)
    answer(fetcher, seq, parts, FetchedPartition("t", 0, 0, 4, 0, [1, 3]))
    assert part.log.log_end_offset == 3  # the leader's epoch 1 ended at 3


def test_out_of_range_below_the_leaders_log_start_restarts_the_log_there(parts):
    part = parts[("t", 0)]
    append(part, 4, epoch=4)
    fetcher = ReplicaFetcher(ME)
    ((seq, _, _),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 1]
    out_of_range = int(ErrorCode.OFFSET_OUT_OF_RANGE)
    answer(fetcher, seq, parts, FetchedPartition("t", 0, out_of_range, 200, 100))
    assert (part.log.log_start_offset, part.log.log_end_offset) == (100, 100)
    ((seq, _, req),) = [r for r in fetcher.requests(parts, LIVE, NOW + 1) if r[1] == 1]
    assert req.partitions[0].offset == 100
    answer(fetcher, seq, parts, FetchedPartition("t", 0, out_of_range, 200, 50))  # a start we are past: no change
    assert (part.log.log_start_offset, part.log.log_end_offset) == (100, 100)


@pytest.mark.parametrize("code", [ErrorCode.UNKNOWN_LEADER_EPOCH, ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                  ErrorCode.LEADER_NOT_AVAILABLE])
def test_a_leader_behind_on_metadata_is_asked_again_shortly_in_the_same_epoch(parts, code):
    """The leader may not have applied the metadata that makes it leader yet: pausing until the
    epoch changed left a follower out of the ISR for good when no election followed."""
    fetcher = ReplicaFetcher(ME)
    ((seq, _, _),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 1]
    answer(fetcher, seq, parts, FetchedPartition("t", 0, int(code)), FetchedPartition("t", 1, 0, 0, 0))
    assert by_leader(fetcher.requests(parts, LIVE, NOW + 1)) == {1: [("t", 1)]}  # t-0 backs off
    fetcher.in_flight.clear()
    later = NOW + METADATA_BACKOFF_MS
    assert ("t", 0) in by_leader(fetcher.requests(parts, LIVE, later))[1]  # same epoch, asked again


def test_a_fenced_partition_pauses_until_the_metadata_names_a_new_epoch(parts):
    code = ErrorCode.FENCED_LEADER_EPOCH
    fetcher = ReplicaFetcher(ME)
    ((seq, _, _),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 1]
    answer(fetcher, seq, parts, FetchedPartition("t", 0, int(code)), FetchedPartition("t", 1, 0, 0, 0))
    assert by_leader(fetcher.requests(parts, LIVE, NOW + 1)) == {1: [("t", 1)]}  # t-0 waits
    fetcher.in_flight.clear()
    assert by_leader(fetcher.requests(parts, LIVE, NOW + 2)) == {1: [("t", 1)], 3: [("u", 0)]}  # same epoch: t-0 waits
    parts[("t", 0)].apply_metadata(1, 5, [1, 2, 3], [1, 2, 3], NOW + 3)
    assert by_leader(fetcher.requests(parts, LIVE, NOW + 3)) == {1: [("t", 0)]}


def test_a_forgotten_partition_is_no_longer_paused(parts):
    fetcher = ReplicaFetcher(ME)
    ((seq, _, _),) = [r for r in fetcher.requests(parts, LIVE, NOW) if r[1] == 1]
    answer(fetcher, seq, parts, FetchedPartition("t", 0, int(ErrorCode.FENCED_LEADER_EPOCH)))
    fetcher.forget(("t", 0))  # it left this broker (and may come back in the same epoch)
    assert ("t", 0) in by_leader(fetcher.requests(parts, LIVE, NOW + 1))[1]


# -- damage (issue 10 point 5) ----------------------------------------------------------------


def test_follower_truncates_to_its_first_damaged_range_before_fetching(parts):
    part = parts[("t", 0)]
    append(part, 2, epoch=4)
    append(part, 3, epoch=4)
    append(part, 4, epoch=4)
    part.log.damaged.add(2, 5)  # recovery lost a batch here; the leader has it
    part.high_watermark = 9
    fetcher = ReplicaFetcher(ME)
    (req,) = [r for _, leader, r in fetcher.requests(parts, LIVE, NOW) if leader == 1]
    spec = next(p for p in req.partitions if (p.topic, p.partition) == ("t", 0))
    assert spec.offset == 2 and part.log.log_end_offset == 2 and not part.log.damaged
    assert part.high_watermark == 2  # never counted as holding what it lost


def leader_lost_2_to_5(parts):
    """t-0 holds offsets 0-1; its leader answers that it lost [2, 5) too."""
    part = parts[("t", 0)]
    append(part, 2, epoch=4)
    fetcher = ReplicaFetcher(ME)
    seq = next(s for s, leader, _ in fetcher.requests(parts, LIVE, NOW) if leader == 1)
    answer(fetcher, seq, parts, FetchedPartition("t", 0, int(ErrorCode.CORRUPT_MESSAGE), 9, 0, damaged=[2, 5]))
    return part, fetcher


def test_follower_skips_a_range_the_leader_lost_too(parts):
    part, fetcher = leader_lost_2_to_5(parts)
    assert part.log.log_end_offset == 5 and part.log.damaged.ranges == [(2, 5)]
    (req,) = [r for _, leader, r in fetcher.requests(parts, LIVE, NOW) if leader == 1]
    spec = next(p for p in req.partitions if (p.topic, p.partition) == ("t", 0))
    assert spec.offset == 5  # the copied range is not truncated again
    part.log._check()


def offset_of(requests, tp, leader=1):
    (req,) = [r for _, lead, r in requests if lead == leader]
    return next(p.offset for p in req.partitions if (p.topic, p.partition) == tp)


def test_damage_found_while_leading_is_dropped_when_following_again(parts):
    """Own damage is dropped every time the replica starts following a leader epoch, not once
    per open: its fetch offset then stays below the hole (never caught up over it)."""
    part = parts[("t", 0)]
    fetcher = ReplicaFetcher(ME)
    fetcher.requests(parts, LIVE, NOW)  # followed epoch 4: nothing to drop then
    for _ in range(5):
        append(part, 2, epoch=4)
    part.apply_metadata(ME, 5, [1, 2, 3], [1, 2, 3], NOW)  # leads
    part.log.damaged.add(4, 6)  # a read found damage while it led
    part.apply_metadata(1, 6, [1, 2, 3], [1, 2, 3], NOW)  # follows again
    fetcher.in_flight.clear()
    assert offset_of(fetcher.requests(parts, LIVE, NOW), ("t", 0)) == 4
    assert part.log.log_end_offset == 4 and not part.log.damaged


def test_a_range_the_leader_lost_is_not_dropped_at_the_next_epoch(parts):
    part, fetcher = leader_lost_2_to_5(parts)
    part.apply_metadata(1, 5, [1, 2, 3], [1, 2, 3], NOW)
    fetcher.in_flight.clear()
    assert offset_of(fetcher.requests(parts, LIVE, NOW), ("t", 0)) == 5
    assert part.log.damaged.ranges == [(2, 5)]


@pytest.mark.parametrize("entry", [
    FetchedPartition("t", 0, int(ErrorCode.CORRUPT_MESSAGE), 9, 0),
    FetchedPartition("t", 0, int(ErrorCode.KAFKA_STORAGE_ERROR), 9, 0),
    FetchedPartition("t", 0, 0, 9, 0, data=forge(build_native_batch([(NOW, None, b"r", None)]), base_offset=5)),
])
def test_an_answer_that_cannot_be_acted_on_backs_off(parts, entry, caplog):
    from zbroker.core.replication import ERROR_BACKOFF_MS

    fetcher = ReplicaFetcher(ME)
    for i in range(20):  # without a backoff: 20 fetches, 20 ERROR lines
        now = NOW + i
        reqs = fetcher.requests(parts, LIVE, now)
        seq = next((s for s, leader, r in reqs if leader == 1 and any(p.topic == "t" and p.partition == 0
                                                                     for p in r.partitions)), None)
        if seq is not None:
            answer(fetcher, seq, parts, entry, now=now)
        fetcher.in_flight.clear()
    assert sum(1 for r in caplog.records if r.levelname == "ERROR") == 1
    later = fetcher.requests(parts, LIVE, NOW + ERROR_BACKOFF_MS)
    assert any(("t", 0) in [(p.topic, p.partition) for p in r.partitions] for _, _, r in later)


# -- the leader's log start (DeleteRecords) ----------------------------------------------------


def answer_t0(fetcher, parts, now=NOW, **fields):
    """One fetch round to leader 1, answered for t-0 with ``fields`` (high watermark 9 unless given)."""
    seq = next(s for s, leader, _ in fetcher.requests(parts, LIVE, now) if leader == 1)
    return answer(fetcher, seq, parts, FetchedPartition("t", 0, **{"high_watermark": 9, **fields}), now=now)


def test_a_follower_adopts_the_leaders_log_start_and_never_goes_back(parts):
    part = parts[("t", 0)]
    for _ in range(3):
        append(part, 3, epoch=4)  # 0-8
    fetcher = ReplicaFetcher(ME)
    answer_t0(fetcher, parts, log_start_offset=4)
    assert (part.log.log_start_offset, part.log.log_end_offset) == (4, 9)
    fetcher.in_flight.clear()
    answer_t0(fetcher, parts, log_start_offset=2)  # an older answer: no change
    assert part.log.log_start_offset == 4
    part.apply_metadata(ME, 5, [1, 2, 3], [1, 2, 3], NOW)  # elected: it does not serve what the leader deleted
    assert part.log.log_start_offset == 4 and part.high_watermark >= 4
    part.log._check()


def test_the_log_start_is_adopted_after_the_answers_records(parts, logs):
    leader = Partition("t", 0, logs("leader-t-0"), 1)
    for _ in range(3):
        append(leader, 3, epoch=4)
    leader.log.delete_records_before(4)
    data = leader.log.read(4, 1 << 20).data  # from the batch holding 4: offsets 3-8
    part = parts[("t", 0)]
    append(part, 3, epoch=4)  # 0-2: the follower already has them
    answer_t0(ReplicaFetcher(ME), parts, log_start_offset=4, data=data)
    assert (part.log.log_start_offset, part.log.log_end_offset, part.high_watermark) == (4, 9, 9)


def test_a_leaders_log_start_past_the_follower_end_is_clipped_to_it(parts):
    part = parts[("t", 0)]
    append(part, 5, epoch=4)
    answer_t0(ReplicaFetcher(ME), parts, log_start_offset=7)
    assert (part.log.log_start_offset, part.log.log_end_offset) == (5, 5)  # empty, and fetching on from 5


def test_a_replica_fetch_answer_carries_the_leaders_log_start(cluster):
    """The leader side: what the follower adopts is in every follower fetch answer."""
    app, now = cluster
    app.produce.produce(INTERNAL, 1, 1000, [("t", 0, records_batch(3)), ("t", 0, records_batch(3))], now)
    for replica in (2, 3):
        follower_fetch(app, replica, 6, now)
    app.delete_records.delete_records(INTERNAL, [("t", 0, 4)], 30_000, now)
    assert follower_fetch(app, 2, 6, now).log_start_offset == 4
