"""GroupCoordinator through an App on one node: no sockets, time passed in.

The group's state lives in its ``__consumer_offsets`` partition; the restart tests build a
second App on the same data dir and check that it is read back from there.
"""

import logging
import struct

import msgpack
import pytest

from storage import build_native_batch
from storage.log import Log
from tests.unit.servicefakes import START_MS, error_code, settle, single_app
from zbroker.context import INTERNAL, Completion
from zbroker.control.metadata import PARTITION_CHANGE_RECORD
from zbroker.control.topicadmin import OFFSETS_TOPIC, CreateTopic
from zbroker.errors import ErrorCode
from zbroker.groups.coordinator import CommitOffset, CommittedOffset, OffsetCommit
from zbroker.groups.group import MemberHeartbeat
from zbroker.hashing import positive_hash_mod

NOW = START_MS
GROUP = "g"


def offsets_tp(app, group=GROUP):
    return OFFSETS_TOPIC, positive_hash_mod(group.encode(), app.config.setting("offsets_topic_partitions"))


def start(app, now=NOW, topics=(("t", 4),)):
    """find_coordinator creates the offsets topic; tick until this broker coordinates."""
    assert error_code(lambda: app.groups.find_coordinator(INTERNAL, GROUP, now)) == ErrorCode.COORDINATOR_NOT_AVAILABLE
    app.tick(now)
    assert offsets_tp(app)[1] in app.groups.loaded
    for name, partitions in topics:
        settle(app.admin.create_topic(INTERNAL, CreateTopic(name, partitions), now))
    return app


@pytest.fixture
def app(tmp_path):
    app = start(single_app(tmp_path))
    yield app
    app.close(NOW)


def beat(app, epoch, member_id="", now=NOW, **fields):
    """A heartbeat; returns the HeartbeatAnswer once the records are replicated."""
    answer = app.groups.heartbeat(INTERNAL, MemberHeartbeat(GROUP, epoch, member_id, **fields), now)
    return settle(answer).answer


def join(app, now=NOW, **fields):
    return beat(app, 0, now=now, **{"topics": ["t"], **fields})


def commit(app, offsets, member_id="", epoch=-1, now=NOW):
    req = OffsetCommit(GROUP, [CommitOffset("t", p, o, f"m{o}") for p, o in offsets.items()], member_id, epoch)
    return settle(app.groups.offset_commit(INTERNAL, req, now))


def fetch_offsets(app, tps=None):
    return {(o.topic, o.partition): o.offset for o in app.groups.offset_fetch(INTERNAL, GROUP, tps, NOW)}


# -- placement ---------------------------------------------------------------------------


def test_find_coordinator_creates_the_offsets_topic_then_names_this_broker(tmp_path):
    app = single_app(tmp_path)
    assert app.control.image.get(OFFSETS_TOPIC) is None
    assert error_code(lambda: app.groups.find_coordinator(INTERNAL, GROUP, NOW)) == ErrorCode.COORDINATOR_NOT_AVAILABLE
    topic = app.control.image.get(OFFSETS_TOPIC)
    assert topic.internal and topic.overrides["cleanup_policy"] == "compact"
    assert topic.partition_count == app.config.setting("offsets_topic_partitions")
    app.tick(NOW)
    found = app.groups.find_coordinator(INTERNAL, GROUP, NOW)
    assert (found.broker_id, found.port) == (1, app.config.broker(1).port)
    assert error_code(lambda: app.groups.find_coordinator(INTERNAL, "", NOW)) == ErrorCode.INVALID_GROUP_ID
    app.close(NOW)


def test_before_the_offsets_topic_exists_group_requests_say_not_available(tmp_path):
    app = single_app(tmp_path)
    assert error_code(lambda: join(app)) == ErrorCode.COORDINATOR_NOT_AVAILABLE
    app.close(NOW)


def test_a_partition_this_broker_does_not_lead_answers_not_coordinator(app):
    topic, index = offsets_tp(app)
    app.control.propose([{"type": PARTITION_CHANGE_RECORD, "topic": topic, "partition": index, "leader": -1,
                          "leader_epoch": 1, "isr": [1]}])
    app.metadata_changed(NOW)
    assert index not in app.groups.loaded  # sync dropped what it coordinated there
    assert error_code(lambda: join(app)) == ErrorCode.NOT_COORDINATOR
    assert error_code(lambda: app.groups.offset_fetch(INTERNAL, GROUP, None, NOW)) == ErrorCode.NOT_COORDINATOR
    assert error_code(lambda: app.groups.find_coordinator(INTERNAL, GROUP, NOW)) == ErrorCode.COORDINATOR_NOT_AVAILABLE


def test_a_led_partition_not_yet_loaded_answers_load_in_progress_until_the_next_sync(app):
    join(app)
    index = offsets_tp(app)[1]
    app.groups.loaded.discard(index)  # the window between becoming leader and replaying the partition
    assert error_code(lambda: join(app)) == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    app.tick(NOW + 1)
    assert index in app.groups.loaded
    assert [m.topics for m in app.groups.describe_group(INTERNAL, GROUP, NOW).members] == [["t"]]


# -- membership --------------------------------------------------------------------------


def test_a_join_is_answered_once_its_records_are_in_the_offsets_partition(app):
    part = app.partitions.get(offsets_tp(app))
    end_before = part.log.log_end_offset
    seen = []
    answer = app.groups.heartbeat(INTERNAL, MemberHeartbeat(GROUP, 0, topics=["t"]), NOW)
    assert isinstance(answer, Completion)
    answer.on_done(lambda done: seen.append(part.high_watermark))
    result = settle(answer)
    assert result.answer.assignment == [("t", p) for p in range(4)] and result.answer.member_epoch >= 1
    assert part.log.log_end_offset > end_before and seen == [part.log.log_end_offset]  # replicated when answered
    assert 100 <= result.heartbeat_interval_ms <= 3000


def test_a_heartbeat_that_changes_nothing_is_answered_at_once_and_writes_nothing(app):
    first = join(app)
    part = app.partitions.get(offsets_tp(app))
    end = part.log.log_end_offset
    again = app.groups.heartbeat(INTERNAL, MemberHeartbeat(GROUP, first.member_epoch, first.member_id), NOW + 10)
    assert not isinstance(again, Completion)
    assert again.answer.assignment == first.assignment and part.log.log_end_offset == end


def test_two_members_split_the_partitions_without_sharing_one(app):
    a = join(app)
    b = join(app)
    assert b.assignment == []  # a still holds everything
    a = beat(app, a.member_epoch, a.member_id, owned=a.assignment)
    assert len(a.assignment) == 2  # two revoked
    a = beat(app, a.member_epoch, a.member_id, owned=a.assignment)  # released
    b = beat(app, b.member_epoch, b.member_id, owned=[])
    assert len(b.assignment) == 2
    assert sorted(a.assignment + b.assignment) == [("t", p) for p in range(4)]
    detail = app.groups.describe_group(INTERNAL, GROUP, NOW)
    assert detail.state == "stable" and len(detail.members) == 2


def test_a_stale_member_epoch_is_fenced(app):
    a = join(app)
    join(app)
    a2 = beat(app, a.member_epoch, a.member_id, owned=a.assignment)  # revocation: epoch moves on
    assert a2.member_epoch > a.member_epoch
    assert error_code(lambda: beat(app, a.member_epoch - 1, a.member_id)) == ErrorCode.FENCED_MEMBER_EPOCH
    assert error_code(lambda: beat(app, 1, "nobody")) == ErrorCode.UNKNOWN_MEMBER_ID


def test_a_fenced_member_is_removed_at_once_and_a_rejoin_with_an_empty_id_takes_its_partitions(tmp_path):
    app = start(single_app(tmp_path))
    a = join(app)
    b = join(app)
    a = beat(app, a.member_epoch, a.member_id, owned=a.assignment)
    assert error_code(lambda: beat(app, a.member_epoch + 5, a.member_id, owned=a.assignment)) == ErrorCode.FENCED_MEMBER_EPOCH
    assert [m.member_id for m in app.groups.describe_group(INTERNAL, GROUP, NOW).members] == [b.member_id]
    a2 = join(app, owned=[])  # the outside client's way: "" and epoch 0, long before a's session ends
    for _ in range(4):
        b = beat(app, b.member_epoch, b.member_id, owned=b.assignment)
        a2 = beat(app, a2.member_epoch, a2.member_id, owned=a2.assignment)
    assert sorted(a2.assignment + b.assignment) == [("t", p) for p in range(4)] and a2.assignment
    app2 = reopen(app, tmp_path, NOW + 1)  # the removal is in the offsets partition too
    assert {m.member_id for m in app2.groups.describe_group(INTERNAL, GROUP, NOW + 1).members} == {a2.member_id, b.member_id}
    app2.close(NOW + 1)


def test_a_bad_session_timeout_is_refused_and_creates_no_group(app):
    assert error_code(lambda: join(app, session_timeout_ms=10)) == ErrorCode.INVALID_SESSION_TIMEOUT
    assert error_code(lambda: join(app, rebalance_timeout_ms=10)) == ErrorCode.INVALID_REQUEST
    assert app.groups.list_groups(INTERNAL) == []


def test_a_silent_member_is_removed_when_its_session_expires(app):
    a = join(app, session_timeout_ms=5_000)
    b = join(app, session_timeout_ms=30_000)
    app.groups.expire_members(NOW + 4_999)
    assert len(app.groups.describe_group(INTERNAL, GROUP, NOW).members) == 2
    app.groups.expire_members(NOW + 5_000)
    (left,) = app.groups.describe_group(INTERNAL, GROUP, NOW).members
    assert left.member_id == b.member_id
    b = beat(app, b.member_epoch, b.member_id, now=NOW + 5_001)
    assert b.assignment == [("t", p) for p in range(4)]  # a's partitions went to b
    assert error_code(lambda: beat(app, a.member_epoch, a.member_id, now=NOW + 5_001)) == ErrorCode.UNKNOWN_MEMBER_ID


# -- offsets -----------------------------------------------------------------------------


def test_offsets_committed_by_a_member_are_fetched_back(app):
    a = join(app)
    assert sorted(commit(app, {0: 5, 1: 7}, a.member_id, a.member_epoch)) == [("t", 0), ("t", 1)]
    assert fetch_offsets(app) == {("t", 0): 5, ("t", 1): 7}
    assert fetch_offsets(app, [("t", 1), ("t", 3)]) == {("t", 1): 7, ("t", 3): -1}
    (one,) = app.groups.offset_fetch(INTERNAL, GROUP, [("t", 0)], NOW)
    assert one == CommittedOffset("t", 0, 5, "m5")


def test_a_commit_with_a_stale_epoch_is_refused(app):
    a = join(app)
    b = join(app)
    a2 = beat(app, a.member_epoch, a.member_id, owned=a.assignment)  # a keeps two partitions
    moved = sorted(set(a.assignment) - set(a2.assignment))
    assert commit(app, {moved[0][1]: 2}, a.member_id, a.member_epoch) == [moved[0]]  # still releasing it: fine
    a2 = beat(app, a2.member_epoch, a2.member_id, owned=a2.assignment)  # released
    assert error_code(lambda: commit(app, {moved[0][1]: 3}, a.member_id, a.member_epoch)) == ErrorCode.STALE_MEMBER_EPOCH
    kept = a2.assignment[0][1]
    assert commit(app, {kept: 3}, a.member_id, a.member_epoch) == [("t", kept)]  # still its own: fine
    assert error_code(lambda: commit(app, {0: 1}, b.member_id, b.member_epoch + 5)) == ErrorCode.STALE_MEMBER_EPOCH
    assert fetch_offsets(app) == {moved[0]: 2, ("t", kept): 3}


def test_an_admin_commit_needs_an_empty_group(app):
    assert commit(app, {0: 9}) == [("t", 0)]  # no members yet: allowed
    join(app)
    assert error_code(lambda: commit(app, {0: 10})) == ErrorCode.NON_EMPTY_GROUP
    assert fetch_offsets(app) == {("t", 0): 9}
    assert error_code(lambda: commit(app, {0: -1})) == ErrorCode.NON_EMPTY_GROUP  # membership is checked first


# -- list, describe, delete --------------------------------------------------------------


def test_list_describe_and_delete_a_group(app):
    a = join(app)
    commit(app, {2: 4}, a.member_id, a.member_epoch)
    (listed,) = app.groups.list_groups(INTERNAL)
    assert (listed.group, listed.state, listed.members) == (GROUP, "stable", 1)
    assert (listed.group_type, listed.protocol_type) == ("consumer", "consumer")  # ListGroups v5's type
    detail = app.groups.describe_group(INTERNAL, GROUP, NOW)
    assert detail.assignor == "sticky" and detail.members[0].assignment == a.assignment
    assert (detail.group_type, detail.members[0].member_metadata) == ("consumer", b"")
    assert detail.offsets == [CommittedOffset("t", 2, 4, "m4")]
    assert error_code(lambda: app.groups.delete_group(INTERNAL, GROUP, NOW)) == ErrorCode.NON_EMPTY_GROUP
    beat(app, -1, a.member_id)  # leave
    assert settle(app.groups.delete_group(INTERNAL, GROUP, NOW)) is None
    assert app.groups.list_groups(INTERNAL) == []
    assert error_code(lambda: app.groups.describe_group(INTERNAL, GROUP, NOW)) == ErrorCode.GROUP_ID_NOT_FOUND
    assert error_code(lambda: app.groups.delete_group(INTERNAL, GROUP, NOW)) == ErrorCode.GROUP_ID_NOT_FOUND


# -- a new coordinator reads the group back ----------------------------------------------


def reopen(app, tmp_path, now):
    app.close(now)
    return single_app(tmp_path, now=now)


def test_members_epochs_and_offsets_survive_a_coordinator_restart(tmp_path):
    app = start(single_app(tmp_path))
    a = join(app)
    b = join(app)
    a = beat(app, a.member_epoch, a.member_id, owned=a.assignment)
    commit(app, {0: 11, 3: 12}, a.member_id, a.member_epoch)
    before = app.groups.describe_group(INTERNAL, GROUP, NOW)

    app = reopen(app, tmp_path, NOW + 100)
    assert offsets_tp(app)[1] in app.groups.loaded  # loaded before serving
    after = app.groups.describe_group(INTERNAL, GROUP, NOW + 100)
    assert [(m.member_id, m.member_epoch, m.assignment, m.revoking) for m in after.members] == \
        [(m.member_id, m.member_epoch, m.assignment, m.revoking) for m in before.members]
    assert fetch_offsets(app) == {("t", 0): 11, ("t", 3): 12}
    # the members carry on where they were: same epochs accepted, a stale one still fenced
    a = beat(app, a.member_epoch, a.member_id, now=NOW + 100, owned=a.assignment)
    b = beat(app, b.member_epoch, b.member_id, now=NOW + 100, owned=[])
    assert sorted(a.assignment + b.assignment) == [("t", p) for p in range(4)]
    assert error_code(lambda: beat(app, 0 + 1, "gone", now=NOW + 100)) == ErrorCode.UNKNOWN_MEMBER_ID
    app.close(NOW + 100)


def test_a_deleted_group_stays_deleted_after_a_restart(tmp_path):
    app = start(single_app(tmp_path))
    commit(app, {1: 3})
    settle(app.groups.delete_group(INTERNAL, GROUP, NOW))
    app = reopen(app, tmp_path, NOW + 100)
    assert app.groups.list_groups(INTERNAL) == []
    assert fetch_offsets(app) == {}
    app.close(NOW + 100)


def test_an_unreadable_group_record_is_skipped_with_one_error(tmp_path, caplog, monkeypatch):
    app = start(single_app(tmp_path))
    commit(app, {0: 5})
    part = app.partitions.get(offsets_tp(app))
    garbage = build_native_batch([(NOW, b"\xc1not msgpack", b"\x01", None)])
    part.log.append(garbage, NOW, leader_epoch=part.leader_epoch)
    commit(app, {1: 6})  # a good record after the bad one
    with caplog.at_level(logging.ERROR, logger="zbroker.groups.coordinator"):
        app = reopen(app, tmp_path, NOW + 100)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unreadable group record" in errors[0].getMessage()
    assert fetch_offsets(app) == {("t", 0): 5, ("t", 1): 6}
    app.close(NOW + 100)


def test_records_of_the_wrong_shape_are_skipped_too(tmp_path, caplog, monkeypatch):
    app = start(single_app(tmp_path))
    part = app.partitions.get(offsets_tp(app))
    bad = [(["o", GROUP], {"offset": 1}), (["m", GROUP, "x"], {"no": "member_id"}), (["z", GROUP], None)]
    records = [(NOW, msgpack.packb(k), None if v is None else msgpack.packb(v), None) for k, v in bad]
    part.log.append(build_native_batch(records), NOW, leader_epoch=part.leader_epoch)
    with caplog.at_level(logging.ERROR, logger="zbroker.groups.coordinator"):
        app = reopen(app, tmp_path, NOW + 100)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "skipping 3 unreadable group record(s)" in errors[0]  # one line per batch
    assert offsets_tp(app)[1] in app.groups.loaded
    assert app.groups.list_groups(INTERNAL) == []  # a skipped record leaves no trace (no phantom group)
    app.close(NOW + 100)


def _groups_on_one_partition(app, n):
    """``n`` group names whose offsets live in the same ``__consumer_offsets`` partition."""
    count = app.config.setting("offsets_topic_partitions")
    index = positive_hash_mod(b"g0", count)
    names = (f"g{i}" for i in range(10_000))
    return [g for g in names if positive_hash_mod(g.encode(), count) == index][:n]


def _commit_group(app, group, offset):
    req = OffsetCommit(group, [CommitOffset("t", 0, offset, "")], "", -1)
    settle(app.groups.offset_commit(INTERNAL, req, NOW))


def _fetch_group(app, group, now):
    return {o.offset for o in app.groups.offset_fetch(INTERNAL, group, [("t", 0)], now)}


def test_commits_after_a_range_lost_to_disk_damage_are_loaded(tmp_path, caplog):
    app = start(single_app(tmp_path))
    groups = _groups_on_one_partition(app, 5)
    for i, group in enumerate(groups):
        _commit_group(app, group, 100 + i)
    part = app.partitions.get((OFFSETS_TOPIC, positive_hash_mod(groups[0].encode(),
                                                                app.config.setting("offsets_topic_partitions"))))
    app.close(NOW)
    # flip bytes inside the batch of the third group's commit (its CRC no longer matches)
    seg = sorted(part.log.directory.glob("*.log"))[-1]
    data, pos, where = bytearray(seg.read_bytes()), 0, {}
    while pos + 12 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        where[base], pos = pos, pos + 12 + length
    damaged = sorted(where)[-3]  # the commits are the last five batches; this one is groups[2]'s
    for k in range(8):
        data[where[damaged] + 70 + k] ^= 0xFF
    seg.write_bytes(bytes(data))

    with caplog.at_level(logging.ERROR, logger="zbroker.groups.coordinator"):
        app = single_app(tmp_path, now=NOW + 100)
    errors = [r.getMessage() for r in caplog.records if r.name == "zbroker.groups.coordinator"]
    assert len(errors) == 1 and f"offsets [{damaged}, {damaged + 1}) are lost to disk damage" in errors[0]
    assert offsets_tp(app, groups[0])[1] in app.groups.loaded
    assert [_fetch_group(app, g, NOW + 100) for g in groups] == [{100}, {101}, {-1}, {103}, {104}]
    app.close(NOW + 100)


def test_a_load_stopped_by_a_read_error_is_not_marked_loaded_and_is_retried(tmp_path, monkeypatch, caplog):
    app = start(single_app(tmp_path))
    commit(app, {0: 7})
    app.close(NOW)
    read = Log.read

    def failing_read(self, *args, **kwargs):
        if self.directory.name.startswith(OFFSETS_TOPIC):
            raise OSError(5, "Input/output error")
        return read(self, *args, **kwargs)

    monkeypatch.setattr(Log, "read", failing_read)
    with caplog.at_level(logging.ERROR, logger="zbroker.groups.coordinator"):
        app = single_app(tmp_path, now=NOW + 100)
    assert offsets_tp(app)[1] not in app.groups.loaded
    assert any("its groups are not loaded" in r.getMessage() for r in caplog.records)
    assert error_code(lambda: fetch_offsets(app)) == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
    monkeypatch.setattr(Log, "read", read)  # the disk answers again: the next load after the back-off reads all
    app.tick(NOW + 200)
    assert offsets_tp(app)[1] not in app.groups.loaded  # not before the back-off
    app.tick(NOW + 100 + 1000)
    assert offsets_tp(app)[1] in app.groups.loaded
    assert app.groups.offset_fetch(INTERNAL, GROUP, [("t", 0)], NOW + 1100)[0].offset == 7
    app.close(NOW + 1100)
