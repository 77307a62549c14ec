"""Partition log behaviour: append, read, roll, reopen, flush policy, truncation, retention."""

import os

import pytest

from storage import (
    COMPRESSION_LZ4, CorruptBatchError, FileHandleCache, LeaderEpochCache, Log, LogConfig,
    OffsetCheckpoint, OffsetMismatch, OffsetOutOfRange, build_native_batch,
    decode_native_records, iter_batches, write_atomic,
)
from storage.errors import CheckpointError

pytestmark = pytest.mark.timeout(60)


def batch(n, ts=1000, tag=b"", compression=0):
    return build_native_batch([(ts + i, b"k%d" % i, tag + b"v%d" % i, None) for i in range(n)],
                              compression=compression)


def offsets_of(data):
    out = []
    for pos, h in iter_batches(data):
        out += [r[0] for r in decode_native_records(data[pos:pos + h.size])]
    return out


def make(tmp_path, name="t-0", **kw):
    return Log(tmp_path / name, LogConfig(**kw), now_ms=0)


def test_append_assigns_offsets_and_read_every_offset(tmp_path):
    lg = make(tmp_path, segment_bytes=400, index_interval_bytes=64)
    infos = [lg.append(batch(1 + i % 4, ts=1000 + i), now_ms=i) for i in range(30)]
    assert infos[0].base_offset == 0
    for a, b in zip(infos, infos[1:]):
        assert b.base_offset == a.last_offset + 1
    assert lg.log_end_offset == infos[-1].last_offset + 1
    assert len(lg.segments()) > 3
    lg._check()
    for off in range(lg.log_end_offset):
        r = lg.read(off, 1)
        assert r.batch_count == 1
        got = offsets_of(r.data)
        assert got[0] == r.first_offset <= off < r.next_offset == got[-1] + 1
        big = lg.read(off, 10**9)
        assert offsets_of(big.data) == list(range(big.first_offset, lg.log_end_offset))
    assert lg.read(lg.log_end_offset, 100) == (b"", lg.log_end_offset, lg.log_end_offset, 0)


def test_read_max_bytes_whole_batches_and_crosses_segments(tmp_path):
    lg = make(tmp_path, segment_bytes=300)
    sizes = [lg.append(batch(3), 0).size for _ in range(10)]
    assert len(lg.segments()) >= 3
    r = lg.read(0, sizes[0] * 5 + 10)
    assert r.batch_count == 5 and len(r.data) == sum(sizes[:5]) and r.next_offset == 15
    r = lg.read(0, 0)
    assert r.batch_count == 1 and len(r.data) == sizes[0]
    r = lg.read(4, sizes[1] * 2 - 1)
    assert (r.first_offset, r.next_offset, r.batch_count) == (3, 6, 1)


def test_read_max_offset_bound(tmp_path):
    lg = make(tmp_path, segment_bytes=300)
    for _ in range(6):
        lg.append(batch(3), 0)
    r = lg.read(0, 10**6, max_offset=7)  # batch 6..8 straddles 7: base < 7, included
    assert (r.first_offset, r.next_offset) == (0, 9)
    r = lg.read(0, 10**6, max_offset=6)
    assert r.next_offset == 6
    r = lg.read(7, 10**6, max_offset=6)  # inside batch 6..8 whose base 6 >= 6
    assert r == (b"", 7, 7, 0)
    assert lg.read(3, 10**6, max_offset=3).batch_count == 0


def test_offset_out_of_range(tmp_path):
    lg = make(tmp_path)
    lg.append(batch(2), 0)
    with pytest.raises(OffsetOutOfRange):
        lg.read(3, 100)
    with pytest.raises(OffsetOutOfRange):
        lg.read(-1, 100)


def test_replica_append_and_rejections(tmp_path):
    lg = make(tmp_path, max_message_bytes=500)
    b = bytearray(batch(2))
    from storage import patch_batch
    patch_batch(b, 0, 7)
    info = lg.append(b, 0, assign_offsets=False)
    assert info.base_offset == 0 and lg.leader_epoch_cache.entries == [(7, 0)]
    with pytest.raises(OffsetMismatch):
        lg.append(b, 0, assign_offsets=False)
    with pytest.raises(CorruptBatchError, match="too large"):
        lg.append(batch(40), 0)
    bad = bytearray(batch(1))
    bad[-1] ^= 1
    with pytest.raises(CorruptBatchError, match="crc"):
        lg.append(bad, 0)
    assert lg.log_end_offset == 2
    lg._check()


def test_offset_for_timestamp(tmp_path):
    lg = make(tmp_path, segment_bytes=500, index_interval_bytes=1)
    for i in range(20):
        lg.append(build_native_batch([(100 * i + 10 * j, None, b"x", None) for j in range(3)]), 0)
    lg.append(batch(2, ts=5000, compression=COMPRESSION_LZ4), 0)
    assert lg.offset_for_timestamp(0) == (0, 0)
    assert lg.offset_for_timestamp(100) == (3, 100)
    assert lg.offset_for_timestamp(111) == (5, 120)   # exact record inside a batch
    assert lg.offset_for_timestamp(1921) == (60, 5000)
    assert lg.offset_for_timestamp(5001) == (61, 5001)
    assert lg.offset_for_timestamp(5002) is None
    for ts in range(0, 2000, 7):
        off, got = lg.offset_for_timestamp(ts)
        assert got >= ts and (off == 60 or (off // 3) * 100 + (off % 3) * 10 == got)


def test_roll_by_bytes_and_ms(tmp_path):
    lg = make(tmp_path, segment_bytes=10**6, segment_ms=1000)
    lg.append(batch(1), now_ms=0)
    lg.append(batch(1), now_ms=999)
    assert len(lg.segments()) == 1
    lg.append(batch(1), now_ms=1000)
    assert [s.base_offset for s in lg.segments()] == [0, 2]
    lg.append(batch(1), now_ms=1999)
    assert len(lg.segments()) == 2
    lg.roll(now_ms=2000)
    lg.roll(now_ms=2000)  # empty active segment: no-op
    assert [s.base_offset for s in lg.segments()] == [0, 2, 4]
    lg2 = make(tmp_path, "b-0", segment_bytes=200)
    n = len(batch(1))
    for _ in range(10):
        lg2.append(batch(1), 0)
    assert all(s.size <= max(200, n) for s in lg2.segments())
    assert len(lg2.segments()) == 10 // (200 // n)
    lg._check()
    lg2._check()


def test_reopen_preserves_everything(tmp_path):
    lg = make(tmp_path, segment_bytes=300, index_interval_bytes=50)
    for i in range(25):
        lg.append(batch(2, ts=i), 0, leader_epoch=i // 10)
    before = lg.read(0, 10**6)
    infos = lg.segments_info()
    lg.close()
    for rp in (None, 0, 20, 50):
        lg = Log(tmp_path / "t-0", LogConfig(segment_bytes=300, index_interval_bytes=50), 0, recovery_point=rp)
        lg._check()
        assert lg.read(0, 10**6) == before
        assert [i[:3] for i in lg.segments_info()] == [i[:3] for i in infos]
        assert lg.leader_epoch_cache.entries == [(0, 0), (1, 20), (2, 40)]
        lg.close()
    lg = Log(tmp_path / "t-0", LogConfig(segment_bytes=300, index_interval_bytes=50), 0)
    assert lg.append(batch(1), 0).base_offset == 50
    lg._check()


def test_flush_policies(tmp_path, monkeypatch):
    calls = []  # leader_epoch=-1 below: no epoch checkpoint writes, only log fsyncs
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    lg = make(tmp_path, "a-0", fsync="always")
    lg.append(batch(2), 0, leader_epoch=-1)
    assert calls and lg.recovery_point == 2
    calls.clear()
    lg = make(tmp_path, "m-0", flush_messages=5)
    lg.append(batch(2), 0, leader_epoch=-1)
    lg.append(batch(2), 0, leader_epoch=-1)
    assert not calls and lg.recovery_point == 0
    lg.append(batch(2), 0, leader_epoch=-1)
    assert calls and lg.recovery_point == 6
    calls.clear()
    lg = make(tmp_path, "t-0", flush_ms=100)
    lg.append(batch(1), 50, leader_epoch=-1)
    assert not lg.maybe_flush(99) and lg.recovery_point == 0
    assert lg.maybe_flush(100) and lg.recovery_point == 1
    assert not lg.maybe_flush(500)  # nothing new to flush
    lg.append(batch(1), 150, leader_epoch=-1)
    assert lg.recovery_point == 1
    lg.append(batch(1), 200, leader_epoch=-1)  # 200 - 100 >= 100: the append itself flushes
    assert lg.recovery_point == 3
    calls.clear()
    lg = make(tmp_path, "n-0")
    lg.append(batch(1), 0, leader_epoch=-1)
    assert not calls and not lg.maybe_flush(10**9)
    lg.close()
    assert calls


def test_handle_cache_bound_many_logs(tmp_path):
    cache = FileHandleCache(max_open=4)
    logs = [Log(tmp_path / f"p-{i}", LogConfig(segment_bytes=300, index_interval_bytes=50), 0, handles=cache)
            for i in range(20)]
    for rnd in range(3):
        for i, lg in enumerate(logs):
            lg.append(batch(2, tag=b"%d-%d" % (i, rnd)), 0)
            assert len(cache) <= 4
    for i, lg in enumerate(logs):
        data = lg.read(0, 10**6).data
        assert [r[3] for pos, h in iter_batches(data)
                for r in decode_native_records(data[pos:pos + h.size])][::2] == [b"%d-%dv0" % (i, r) for r in range(3)]
        lg._check()
        assert len(cache) <= 4
    for lg in logs:
        lg.close()
    assert len(cache) == 0


def test_truncate_to(tmp_path):
    lg = make(tmp_path, segment_bytes=300, index_interval_bytes=50)
    for i in range(20):
        lg.append(batch(3), 0, leader_epoch=i // 5)
    lg.flush()
    lg.truncate_to(100)
    assert lg.log_end_offset == 60
    lg.truncate_to(31)  # inside batch 30..32: the whole batch goes
    assert lg.log_end_offset == 30 and lg.recovery_point == 30
    lg._check()
    assert lg.leader_epoch_cache.entries == [(0, 0), (1, 15)]
    lg.truncate_to(15)
    assert lg.leader_epoch_cache.entries == [(0, 0)]
    lg._check()
    assert lg.append(batch(1), 0, leader_epoch=4).base_offset == 15
    assert lg.leader_epoch_cache.end_offset_for(0) == (0, 15)
    assert lg.leader_epoch_cache.end_offset_for(4) == (4, 16)
    lg.truncate_fully_and_start_at(1000)
    assert (lg.log_start_offset, lg.log_end_offset, len(lg.segments())) == (1000, 1000, 1)
    assert lg.append(batch(2), 0).base_offset == 1000
    lg._check()
    lg.close()
    lg = make(tmp_path)
    assert (lg.log_start_offset, lg.log_end_offset) == (1000, 1002)


def test_delete_segments_before(tmp_path):
    lg = make(tmp_path, segment_bytes=300)
    for _ in range(12):
        lg.append(batch(3), 0)
    bases = [s.base_offset for s in lg.segments()]
    assert lg.delete_segments_before(bases[1] - 1) == 0
    assert lg.delete_segments_before(bases[2]) == 2
    assert lg.log_start_offset == bases[2]
    with pytest.raises(OffsetOutOfRange):
        lg.read(0, 100)
    assert lg.read(bases[2], 1).first_offset == bases[2]
    assert lg.delete_segments_before(10**9) == len(bases) - 3
    assert len(lg.segments()) == 1 and lg.log_start_offset == bases[-1]
    lg._check()
    lg.close()
    assert make(tmp_path).log_start_offset == bases[-1]


def test_stray_and_unknown_files(tmp_path, caplog):
    d = tmp_path / "t-0"
    lg = make(tmp_path)
    lg.append(batch(2), 0)
    lg.close()
    for name in ("x.tmp", "00000000000000000000.log.deleted", "00000000000000000000.log.cleaned"):
        (d / name).write_bytes(b"junk")
    (d / "README").write_text("hi")
    (d / "00000000000000000099.index").write_bytes(b"")
    lg = make(tmp_path)
    assert sorted(os.listdir(d)) == ["00000000000000000000.index", "00000000000000000000.log",
                                     "00000000000000000000.timeindex", "README", "leader-epoch-checkpoint"]
    assert "README" in caplog.text
    assert lg.log_end_offset == 2


def test_checkpoints(tmp_path):
    cp = OffsetCheckpoint(tmp_path / "recovery-point-offset-checkpoint")
    assert cp.read() == {}
    cp.write({("orders", 0): 12, ("a.b-c", 3): 0})
    assert cp.read() == {("orders", 0): 12, ("a.b-c", 3): 0}
    assert (tmp_path / "recovery-point-offset-checkpoint").read_text().splitlines()[:2] == ["0", "2"]
    for text, line in (("1\n0\n", "line 1"), ("0\n2\nt 0 1\n", "line 2"), ("0\n1\nt x 1\n", "line 3"),
                       ("0\n1\nt 0\n", "line 3"), ("0\n", "line 2")):
        (tmp_path / "bad").write_text(text)
        with pytest.raises(CheckpointError, match=line) as ei:
            OffsetCheckpoint(tmp_path / "bad").read()
        assert "bad" in str(ei.value)
    write_atomic(tmp_path / "f", b"abc")
    assert (tmp_path / "f").read_bytes() == b"abc" and not (tmp_path / "f.tmp").exists()


def test_leader_epoch_cache(tmp_path):
    c = LeaderEpochCache(tmp_path / "leader-epoch-checkpoint", lambda: 100)
    assert c.end_offset_for(0) == (-1, -1) and c.latest_epoch is None
    c.assign(1, 10)
    c.assign(3, 30)
    c.assign(2, 40)  # stale: ignored
    c.assign(5, 60)
    assert c.entries == [(1, 10), (3, 30), (5, 60)]
    assert c.end_offset_for(5) == (5, 100)
    assert c.end_offset_for(4) == (3, 60)
    assert c.end_offset_for(3) == (3, 60)
    assert c.end_offset_for(0) == (0, 10)
    assert c.end_offset_for(6) == (-1, -1)
    assert LeaderEpochCache(c.path).entries == c.entries
    c.truncate_from_start(35)
    assert c.entries == [(3, 35), (5, 60)]
    c.truncate_from_end(60)
    assert c.entries == [(3, 35)]
    c.assign(7, 20)  # after a truncation a newer epoch replaces entries at/after its start
    assert c.entries == [(7, 20)]
    (tmp_path / "bad").write_text("0\n1\n3\n")
    with pytest.raises(CheckpointError, match="line 3"):
        LeaderEpochCache(tmp_path / "bad")


def test_truncating_at_the_end_forgets_an_epoch_that_wrote_nothing(tmp_path):
    from storage import Log, LogConfig, build_native_batch

    lg = Log(tmp_path / "e", LogConfig(), 0)
    lg.append(build_native_batch([(1, None, b"x", None)]), 0, leader_epoch=0)
    lg.leader_epoch_cache.assign(3, lg.log_end_offset)  # elected leader at epoch 3, wrote nothing
    lg.truncate_to(lg.log_end_offset)  # told by the new leader that epoch 0 ends here
    assert lg.leader_epoch_cache.latest_epoch == 0
    lg.close()
