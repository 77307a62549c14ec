"""``__consumer_offsets`` is the broker's: clients cannot delete or reconfigure it, and the
group coordinator survives anything written there -- each unreadable batch or record is
skipped with one ERROR line naming the partition and offsets, the App starts, the groups
before and after the garbage load, and the timers keep running.
"""

import logging

import msgpack
import pytest

from storage import COMPRESSION_ZSTD, build_kafka_batch, build_native_batch
from tests.unit.batchforge import forge
from tests.unit.servicefakes import error_code, single_app
from tests.unit.test_coordinator import NOW, commit, fetch_offsets, offsets_tp, reopen, start
from zbroker.context import INTERNAL
from zbroker.control.topicadmin import OFFSETS_TOPIC, AlterTopicConfig, CreatePartitions, DeleteTopic
from zbroker.errors import ErrorCode


def _record(key, value) -> tuple:
    return NOW, msgpack.packb(key), None if value is None else msgpack.packb(value), None


GARBAGE = {
    "not msgpack": build_native_batch([(NOW, b"\xc1\xc1", b"\x01", None)]),
    "null key": build_native_batch([(NOW, None, b"\x80", None)]),
    "magic 2": build_kafka_batch([_record(["o", "g", "t", 0], {"offset": 99, "metadata": ""})]),
    "payload not msgpack": forge(payload=b"\xc1" * 20),
    "payload counts 2 records, header 1": forge(build_native_batch([_record(["g", "x"], None)] * 2), record_count=1,
                                                last_offset_delta=0),
    "compressed garbage": forge(build_native_batch([_record(["g", "x"], None)], compression=COMPRESSION_ZSTD),
                                payload=b"\x28\xb5\x2f\xfd" + b"\x00" * 12),
    "wrong shapes": build_native_batch([
        _record(["o", 7, "t", 0], {"offset": 1}),  # group not a string
        _record(["o", "g", "t", -1], {"offset": 1}),
        _record(["o", "g", "t", 0], {"offset": "1"}),
        _record(["m", "g", "x"], {"member_id": "x", "assigned": [[1, "t"]]}),
        _record(["m", "g", "x"], {"member_id": "y"}),
        _record(["g", "g"], {"epoch": None}),
        _record("og", None),
        _record(["z" * 10_000, "g"], None),
    ]),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_in_the_offsets_partition_is_skipped_with_one_error_and_the_groups_load(tmp_path, caplog, name):
    app = start(single_app(tmp_path))
    commit(app, {0: 5})
    part = app.partitions.get(offsets_tp(app))
    part.log.append(GARBAGE[name], NOW, leader_epoch=part.leader_epoch)  # as a buggy broker or a bad disk might
    commit(app, {1: 6})
    with caplog.at_level(logging.ERROR, logger="zbroker.groups.coordinator"):
        app = reopen(app, tmp_path, NOW + 100)  # the App starts
        for t in range(5):
            app.tick(NOW + 100 + t * 1000)  # loaded once: no error per tick
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"{OFFSETS_TOPIC}-{offsets_tp(app)[1]}" in errors[0] and "offsets 1-" in errors[0]
    assert len(errors[0]) < 400
    assert fetch_offsets(app) == {("t", 0): 5, ("t", 1): 6}  # before and after the garbage
    assert [g.group for g in app.groups.list_groups(INTERNAL)] == ["g"]
    app.close(NOW + 10_000)


def test_several_garbage_batches_in_a_row_each_log_once(tmp_path, caplog):
    app = start(single_app(tmp_path))
    part = app.partitions.get(offsets_tp(app))
    for batch in GARBAGE.values():
        part.log.append(batch, NOW, leader_epoch=part.leader_epoch)
    commit(app, {2: 7})
    with caplog.at_level(logging.ERROR, logger="zbroker.groups.coordinator"):
        app = reopen(app, tmp_path, NOW + 100)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == len(GARBAGE)
    assert fetch_offsets(app) == {("t", 2): 7}
    app.close(NOW + 100)


# -- admin -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda app: app.admin.alter_topic_config(INTERNAL, AlterTopicConfig(OFFSETS_TOPIC, {"retention_ms": 1}), NOW),
    lambda app: app.admin.delete_topic(INTERNAL, DeleteTopic(OFFSETS_TOPIC), NOW),
    lambda app: app.admin.create_partitions(INTERNAL, CreatePartitions(OFFSETS_TOPIC, 99), NOW),
], ids=["alter_topic_config", "delete_topic", "create_partitions"])
def test_clients_cannot_change_an_internal_topic(tmp_path, call):
    app = start(single_app(tmp_path))
    before = app.control.image.get(OFFSETS_TOPIC)
    overrides, count = dict(before.overrides), before.partition_count
    assert error_code(lambda: call(app)) in (ErrorCode.INVALID_TOPIC_EXCEPTION, ErrorCode.INVALID_PARTITIONS)
    after = app.control.image.get(OFFSETS_TOPIC)
    assert after is not None and after.overrides == overrides and after.partition_count == count
    app.close(NOW)
