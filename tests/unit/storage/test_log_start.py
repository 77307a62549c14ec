"""A log start inside a segment (Kafka's DeleteRecords): Log.delete_records_before, its file
(storage.log_start), reopening and crashes, reads, timestamps, retention, truncation, compaction."""

import logging

import pytest

from storage import (Log, LogConfig, OffsetOutOfRange, build_kafka_batch, build_native_batch, iter_batches,
                     set_base_offset)
from storage.cleaner import clean
from storage.log_start import FILE_NAME, LogStartOffset

pytestmark = pytest.mark.timeout(60)

CFG = LogConfig(segment_bytes=300, index_interval_bytes=64)


def batch(n, ts=1000, key=b"k"):
    return build_native_batch([(ts + i, key, b"v%d" % i, None) for i in range(n)])


def filled(tmp_path, batches=12, size=3, cfg=CFG, epoch=0):
    """A log of ``batches`` batches of ``size`` records (offsets 0..), several segments."""
    lg = Log(tmp_path / "t-0", cfg, now_ms=0)
    for i in range(batches):
        lg.append(batch(size, ts=1000 + 10 * i), now_ms=i, leader_epoch=epoch)
    assert len(lg.segments()) > 2
    return lg


def bases(lg):
    return [s.base_offset for s in lg.segments()]


def test_the_start_lands_inside_a_segment_and_a_batch(tmp_path):
    lg = filled(tmp_path)
    seg = next(s for s in lg.segments() if s.base_offset < 10 < s.next_offset)
    assert lg.delete_records_before(10) == 10
    assert lg.log_start_offset == 10 and bases(lg)[0] == seg.base_offset  # segments wholly below went
    read = lg.read(10, 1)
    assert read.first_offset == 9 and read.next_offset == 12  # the whole batch holding 10, as in Kafka
    with pytest.raises(OffsetOutOfRange):
        lg.read(9, 1 << 20)
    assert lg.leader_epoch_cache.entries == [(0, 10)]
    lg._check()


def test_the_start_never_moves_back_and_never_passes_the_log_end(tmp_path):
    lg = filled(tmp_path)
    lg.delete_records_before(10)
    before = bases(lg)
    assert lg.delete_records_before(4) == 10 and lg.delete_records_before(10) == 10 and bases(lg) == before
    with pytest.raises(OffsetOutOfRange):
        lg.delete_records_before(lg.log_end_offset + 1)
    assert lg.log_start_offset == 10


def test_everything_deleted_leaves_an_empty_log_that_goes_on(tmp_path):
    lg = filled(tmp_path)
    assert lg.delete_records_before(36) == 36
    assert bases(lg) == [lg.active_segment.base_offset]  # the active segment stays, its records unserved
    assert lg.read(36, 1 << 20).batch_count == 0
    assert lg.append(batch(2), now_ms=100).base_offset == 36
    assert lg.read(36, 1 << 20).first_offset == 36
    lg._check()


def test_the_start_survives_a_clean_reopen(tmp_path):
    lg = filled(tmp_path)
    lg.delete_records_before(10)
    lg.close()
    assert LogStartOffset(tmp_path / "t-0" / FILE_NAME).offset == 10
    again = Log(tmp_path / "t-0", CFG, now_ms=0, recovery_point=36)
    assert (again.log_start_offset, again.log_end_offset) == (10, 36)
    with pytest.raises(OffsetOutOfRange):
        again.read(9, 1)
    again._check()


@pytest.mark.parametrize("recovery_point", [None, 0, 36])
def test_the_start_survives_a_crash(tmp_path, recovery_point):
    """Nothing flushed, nothing closed: the start was written before delete_records_before
    returned."""
    lg = filled(tmp_path)
    lg.delete_records_before(10)
    lg.handles.close_all()
    again = Log(tmp_path / "t-0", CFG, now_ms=0, recovery_point=recovery_point)
    assert (again.log_start_offset, again.log_end_offset) == (10, 36)
    again._check()


def test_a_crash_before_the_segments_went_deletes_them_at_open(tmp_path):
    lg = filled(tmp_path)
    first = bases(lg)
    lg.close()
    LogStartOffset(tmp_path / "t-0" / FILE_NAME).advance(20)  # written; the crash came before the deletion
    again = Log(tmp_path / "t-0", CFG, now_ms=0)
    assert again.log_start_offset == 20 and bases(again)[0] > first[0]
    assert all(s.next_offset > 20 for s in again.segments())
    again._check()


def test_a_start_past_the_recovered_log_end_restarts_the_log_there(tmp_path):
    """Deleted up to an end that was never flushed, then a crash tore the tail off: the log
    goes on empty at its start (the offsets below it are deleted anyway)."""
    lg = filled(tmp_path)
    lg.delete_records_before(36)
    active = lg.active_segment
    lg.handles.close_all()
    with open(active.log_path, "r+b") as f:
        f.truncate(active.size - 5)
    again = Log(tmp_path / "t-0", CFG, now_ms=0, recovery_point=0)
    assert (again.log_start_offset, again.log_end_offset) == (36, 36)
    assert again.append(batch(1), now_ms=1).base_offset == 36
    again._check()


def test_a_malformed_start_file_is_dropped_with_an_error(tmp_path, caplog):
    lg = filled(tmp_path)
    lg.delete_records_before(10)
    lg.close()
    (tmp_path / "t-0" / FILE_NAME).write_text("0\n1\nten\n")
    with caplog.at_level(logging.ERROR):
        again = Log(tmp_path / "t-0", CFG, now_ms=0)
    assert again.log_start_offset == bases(again)[0] < 10
    assert not (tmp_path / "t-0" / FILE_NAME).exists()
    assert any("malformed log start offset" in r.message for r in caplog.records)


def test_retention_moves_the_start_on_past_it(tmp_path):
    lg = filled(tmp_path)
    lg.delete_records_before(4)
    cutoff = bases(lg)[2]
    lg.delete_segments_before(cutoff)
    assert lg.log_start_offset == cutoff
    lg.close()
    assert Log(tmp_path / "t-0", CFG, now_ms=0).log_start_offset == cutoff  # the file's 4 is stale, not used


def test_retention_below_the_start_keeps_the_start(tmp_path):
    lg = filled(tmp_path)
    lg.delete_records_before(10)
    assert lg.delete_segments_before(10) == 0 and lg.log_start_offset == 10


def test_truncating_fully_below_the_start_forgets_it(tmp_path):
    """A replica that starts over lower (truncate_to at or below the start) must not come back
    at the old start after a restart."""
    lg = filled(tmp_path)
    lg.delete_records_before(10)
    lg.truncate_fully_and_start_at(5)
    assert (lg.log_start_offset, lg.log_end_offset) == (5, 5)
    lg.close()
    again = Log(tmp_path / "t-0", CFG, now_ms=0)
    assert (again.log_start_offset, again.log_end_offset) == (5, 5)


def test_truncating_inside_the_batch_holding_the_start_empties_the_log_at_the_start(tmp_path):
    lg = filled(tmp_path)
    lg.delete_records_before(10)  # batch [9, 12) holds it
    lg.truncate_to(11)
    assert (lg.log_start_offset, lg.log_end_offset) == (10, 10)
    lg._check()
    lg.truncate_to(10)
    assert (lg.log_start_offset, lg.log_end_offset) == (10, 10)


def test_offsets_for_times_never_answer_below_the_start(tmp_path):
    lg = Log(tmp_path / "t-0", CFG, now_ms=0)
    lg.append(build_native_batch([(5000, b"k", b"a", None)] + [(100, b"k", b"b", None)] * 3), now_ms=0)  # 0-3
    lg.append(batch(3, ts=4000), now_ms=0)  # 4-6
    lg.append(build_kafka_batch([(3000, b"k", b"c", None)] * 3), now_ms=0)  # 7-9, Kafka magic 2
    lg.delete_records_before(2)
    assert lg.offset_for_timestamp(0) == (2, 100)
    assert lg.offset_for_timestamp(4500) is None  # only offset 0 is that recent, and it is deleted
    assert lg.offset_for_timestamp(3500) == (4, 4000)  # the batch holding the start is passed over
    lg.delete_records_before(8)
    assert lg.offset_for_timestamp(0) == (8, 3000)  # a magic-2 batch answers at the start at the earliest


def test_with_offset_gaps_the_start_may_land_above_the_offset(tmp_path):
    """Compaction removed the tail of the first segment: deleting up to an offset in the gap
    after it deletes that segment, and the start is the next segment's base."""
    cfg = LogConfig(segment_bytes=300, index_interval_bytes=64, allow_offset_gaps=True)
    lg = Log(tmp_path / "t-0", cfg, now_ms=0)
    per_segment = 300 // len(batch(1, key=b"last"))
    for i in range(3 * per_segment):  # the last record of each segment is superseded by the next one
        lg.append(batch(1, ts=1000 + i, key=b"last" if i % per_segment == per_segment - 1 else b"k%03d" % i), now_ms=i)
    clean(lg, now_ms=10_000, delete_retention_ms=0)
    first, second = lg.segments()[:2]
    assert first.next_offset < second.base_offset  # the gap compaction left
    assert lg.delete_records_before(first.next_offset) == second.base_offset
    assert bases(lg)[0] == second.base_offset
    lg._check()


def test_compaction_goes_on_with_a_start_inside_the_first_segment(tmp_path):
    cfg = LogConfig(segment_bytes=300, index_interval_bytes=64, allow_offset_gaps=True)
    lg = Log(tmp_path / "t-0", cfg, now_ms=0)
    for i in range(30):
        lg.append(batch(2, ts=1000 + i, key=b"k%d" % (i % 3)), now_ms=i)
    first = lg.segments()[0]
    lg.delete_records_before(first.base_offset + 1)
    start = lg.log_start_offset
    clean(lg, now_ms=10_000, delete_retention_ms=0)
    assert lg.log_start_offset == start and bases(lg)[0] == first.base_offset  # the first segment stays
    lg._check()
    data = lg.read(start, 1 << 20).data
    assert [h.base_offset for _, h in iter_batches(data)]  # still readable from the start
    lg.close()
    again = Log(tmp_path / "t-0", cfg, now_ms=0)
    # the cleaner emptied the first segment, which is wholly below the start: opening deletes it,
    # and the start moves up to the first offset held (never back)
    assert again.log_start_offset == bases(again)[0] >= start
    assert again.read(again.log_start_offset, 1 << 20).data == data
