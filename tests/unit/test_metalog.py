"""The metadata log on disk (zbroker.control.metalog): snapshots, the prefix below them, recovery."""

import msgpack
import pytest

from zbroker.config import single_node_config
from zbroker.control.metadata import MetadataImage, PartitionMeta, TopicMeta, apply_record, image_records, topic_record
from zbroker.control.metalog import MetadataLog, SnapshotError, decode_snapshot, encode_snapshot

pytestmark = pytest.mark.timeout(60)


def fill(ml, n, epoch=1, per_batch=3):
    for i in range(n):
        ml.append_as_leader([msgpack.packb({"type": "producer_ids", "next": i * per_batch + j}) for j in range(per_batch)], epoch)


def test_snapshot_bytes_round_trip_and_damage_is_named():
    data = encode_snapshot(120, 4, [b"a", b"bc"])
    assert decode_snapshot(data) == (120, 4, [b"a", b"bc"])
    with pytest.raises(SnapshotError, match="CRC"):
        decode_snapshot(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(SnapshotError, match="magic"):
        decode_snapshot(b"XXXX" + data[4:])
    with pytest.raises(SnapshotError):
        decode_snapshot(data[:6])


def test_a_snapshot_drops_whole_segments_below_it_and_survives_reopening(tmp_path):
    ml = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    fill(ml, 60, epoch=1)
    fill(ml, 20, epoch=3)
    end = ml.end_offset()
    assert len(ml.log.segments()) > 4
    snap = ml.write_snapshot(end - 5, [b"r1", b"r2"])
    assert snap == (end - 5, 3)
    assert 0 < ml.start_offset() <= end - 5 and ml.end_offset() == end
    assert ml.end_offset_for_epoch(1) == (-1, -1)  # older than what is left: unknown
    assert ml.end_offset_for_epoch(3) == (3, end)
    ml.write_snapshot(end, [b"r3"])
    ml.write_snapshot(end, [b"r3"])
    assert len(list((tmp_path / "meta").glob("*.snapshot"))) == 2  # the newest two are kept
    start = ml.start_offset()
    ml.close()
    again = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    assert again.snapshot_id() == (end, 3) and again.start_offset() == start and again.end_offset() == end
    assert decode_snapshot(again.read_snapshot(0, 1 << 20))[2] == [b"r3"]
    assert again.last_epoch() == 3


def test_a_damaged_newest_snapshot_falls_back_to_the_older_one(tmp_path):
    ml = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    fill(ml, 40)
    ml.write_snapshot(30, [b"old"])
    ml.write_snapshot(60, [b"new"])
    ml.close()
    newest = sorted((tmp_path / "meta").glob("*.snapshot"))[-1]
    newest.write_bytes(newest.read_bytes()[:-3])
    again = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    assert again.snapshot_id() == (30, 1) and again.start_offset() <= 30


def test_no_valid_snapshot_under_a_dropped_prefix_discards_the_local_copy(tmp_path):
    ml = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    fill(ml, 40)
    ml.write_snapshot(100, [b"x"])
    assert ml.start_offset() > 0
    ml.close()
    for f in (tmp_path / "meta").glob("*.snapshot"):
        f.write_bytes(b"garbage")
    again = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    assert again.snapshot_id() is None and again.start_offset() == again.end_offset() == 0  # refetched from the controller


def test_installing_a_downloaded_snapshot_restarts_the_log_there(tmp_path):
    source = MetadataLog(tmp_path / "a", lambda: 0, segment_bytes=1024)
    fill(source, 30, epoch=2)
    sid = source.write_snapshot(source.end_offset(), [b"r"])
    data = source.read_snapshot(0, 1 << 20)
    follower = MetadataLog(tmp_path / "b", lambda: 0, segment_bytes=1024)
    fill(follower, 3, epoch=1)
    with pytest.raises(SnapshotError):
        follower.install_snapshot((sid[0] + 1, sid[1]), [data])  # not what it claims to be
    follower.install_snapshot(sid, [data[:10], data[10:]])
    assert follower.snapshot_id() == sid
    assert follower.start_offset() == follower.end_offset() == sid[0] and follower.last_epoch() == 2
    follower.close()
    again = MetadataLog(tmp_path / "b", lambda: 0, segment_bytes=1024)
    assert again.snapshot_id() == sid and again.end_offset() == sid[0] and again.last_epoch() == 2


def test_image_records_rebuild_the_image():
    image = MetadataImage()
    t = TopicMeta("t", [PartitionMeta(0, [1, 2], 1, 3, [1, 2]), PartitionMeta(1, [2, 1], 2, 0, [2])], {"retention_ms": 5},
                  topic_id="abc")
    apply_record(image, topic_record(t))
    image.next_producer_id = 42
    rebuilt = MetadataImage()
    for r in image_records(image):
        apply_record(rebuilt, msgpack.unpackb(msgpack.packb(r), raw=False))
    assert rebuilt.topics == image.topics and rebuilt.next_producer_id == 42


def test_a_single_node_control_plane_snapshots_and_restarts_from_it(tmp_path):
    from zbroker.control.controlplane import ControlPlane

    cfg = single_node_config(str(tmp_path))
    cfg.settings.update(metadata_snapshot_records=10, metadata_segment_bytes=1024)
    cp = ControlPlane(cfg, 1, None, 0, lambda: 0)
    assert cp.is_controller
    for i in range(30):
        t = TopicMeta(f"t{i}", [PartitionMeta(0, [1], 1, 0, [1])], topic_id=f"id{i}")
        cp.propose([topic_record(t)])
    cp.propose([{"type": "remove_topic", "name": "t3"}])
    before = {name: t for name, t in cp.image.topics.items()}
    assert cp.metalog.snapshot_id() is not None and cp.metalog.start_offset() > 0
    cp.close()
    cp = ControlPlane(cfg, 1, None, 0, lambda: 0)
    assert cp.image.topics == before and "t3" not in cp.image.topics
    assert cp.applied == cp.metalog.end_offset()
    cp.close()


def test_a_log_that_does_not_continue_the_snapshot_restarts_at_it(tmp_path):
    ml = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    fill(ml, 10, epoch=1)  # records of epoch 1 where the snapshot says epoch 2 ended
    ml.close()
    (tmp_path / "meta").mkdir(exist_ok=True)
    (tmp_path / "meta" / f"{12:020d}-{2:010d}.snapshot").write_bytes(encode_snapshot(12, 2, [b"r"]))
    again = MetadataLog(tmp_path, lambda: 0, segment_bytes=1024)
    assert again.snapshot_id() == (12, 2)
    assert again.start_offset() == again.end_offset() == 12 and again.last_epoch() == 2
