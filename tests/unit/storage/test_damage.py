"""Damage costs only what is damaged (issue 10 point 5): real files, real damage, reopened."""

import logging
import os

import pytest

from storage import Log, LogConfig, build_native_batch, decode_native_records, iter_batches
from storage.damage import DamagedRanges
from storage.errors import CheckpointError, DamagedRangeError

pytestmark = pytest.mark.timeout(60)

CFG = LogConfig(segment_bytes=1200, index_interval_bytes=100)
N = 120  # batches of two records: offsets 0..239


def batch(i):
    return build_native_batch([(1000 + i, b"k%d" % i, b"v%d" % i + b"x" * 100, None), (1001 + i, None, b"w%d" % i, None)])


@pytest.fixture
def built(tmp_path):
    """A cleanly closed log of N two-record batches over many segments."""
    d = tmp_path / "t-0"
    lg = Log(d, CFG, 0)
    for i in range(N):
        lg.append(batch(i), 0)
    bases = [s.base_offset for s in lg.segments()]
    lg.close()
    assert len(bases) >= 8
    return d, bases


def seg_path(d, base):
    return d / f"{base:020d}.log"


def offsets_readable(lg):
    """Every offset a reader can get, seeking past damaged ranges as a consumer would."""
    got, offset = [], lg.log_start_offset
    while offset < lg.log_end_offset:
        try:
            r = lg.read(offset, 10**6)
        except DamagedRangeError as exc:
            offset = exc.end
            continue
        for pos, h in iter_batches(r.data):
            got += [o for o, *_ in decode_native_records(r.data[pos:pos + h.size])]
        offset = r.next_offset
    return got


def batch_positions(path):
    return [(p, h) for p, h in iter_batches(path.read_bytes())]


def flip16(path, pos):
    data = bytearray(path.read_bytes())
    for i in range(pos, pos + 16):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("recovery_point", [None, 0])
def test_flipped_bytes_in_old_segment_lose_one_batch(built, caplog, recovery_point):
    """None: every segment scanned at open. 0: the damaged segment is scanned because it is
    at/after the recovery point (an unclean stop with nothing flushed)."""
    d, bases = built
    p = seg_path(d, bases[2])
    pos, h = batch_positions(p)[3]
    flip16(p, pos + 70)  # inside one batch's payload
    with caplog.at_level(logging.ERROR, logger="storage"):
        lg = Log(d, CFG, 0, recovery_point=recovery_point)
    lg._check()
    lost = (h.base_offset, h.next_offset)
    assert lg.damaged.ranges == [lost]
    assert lg.log_end_offset == 2 * N and [s.base_offset for s in lg.segments()] == bases
    assert offsets_readable(lg) == [o for o in range(2 * N) if not lost[0] <= o < lost[1]]
    assert any(r.levelno == logging.ERROR and f"[{lost[0]}, {lost[1]})" in r.getMessage() for r in caplog.records)
    lg.close()
    lg = Log(d, CFG, 0)  # the range is durable; the file was repaired
    lg._check()
    assert lg.damaged.ranges == [lost]
    assert offsets_readable(lg) == [o for o in range(2 * N) if not lost[0] <= o < lost[1]]


def test_damage_below_recovery_point_found_at_read_time(built, caplog):
    """After a clean stop only the active segment is scanned: a read finds the damage, records
    it like recovery would, and answers with the range (never a stuck reader)."""
    d, bases = built
    p = seg_path(d, bases[1])
    pos, h = batch_positions(p)[2]
    flip16(p, pos + 8)  # the length field and around: framing broken
    lg = Log(d, CFG, 0, recovery_point=2 * N)
    assert lg.damaged.ranges == []  # not scanned
    with caplog.at_level(logging.ERROR, logger="storage"):
        got = offsets_readable(lg)
    lost = (h.base_offset, bases[2])  # a broken length: nothing after it in the segment is provable
    assert got == [o for o in range(2 * N) if not lost[0] <= o < lost[1]]
    assert lg.damaged.ranges == [lost]
    assert any(r.levelno == logging.ERROR and "a read found damage" in r.getMessage() for r in caplog.records)
    lg._check()
    lg.close()
    assert Log(d, CFG, 0, recovery_point=2 * N).damaged.ranges == [lost]


def test_bad_crc_below_recovery_point_found_at_read_time(built):
    d, bases = built
    p = seg_path(d, bases[1])
    pos, h = batch_positions(p)[1]
    flip16(p, pos + 64)  # payload only: framing intact, CRC wrong
    lg = Log(d, CFG, 0, recovery_point=2 * N)
    with pytest.raises(DamagedRangeError) as err:
        lg.read(h.base_offset, 10**6)
    assert (err.value.start, err.value.end) == (h.base_offset, h.next_offset)
    lg._check()


def test_torn_middle_segment(built):
    d, bases = built
    p = seg_path(d, bases[3])
    positions = batch_positions(p)
    cut, h = positions[-2]
    with open(p, "r+b") as f:
        f.truncate(cut + 20)
    lg = Log(d, CFG, 0)
    lg._check()
    assert lg.damaged.ranges == [(h.base_offset, bases[4])]
    assert offsets_readable(lg) == [o for o in range(2 * N) if not h.base_offset <= o < bases[4]]


def test_deleted_middle_segment_is_reported(built):
    d, bases = built
    for suffix in (".log", ".index", ".timeindex"):
        (d / f"{bases[4]:020d}{suffix}").unlink()
    for rp in (2 * N, None):
        lg = Log(d, CFG, 0, recovery_point=rp)
        lg._check()
        assert lg.damaged.ranges == [(bases[4], bases[5])]
        with pytest.raises(DamagedRangeError):
            lg.read(bases[4], 10**6)
        assert offsets_readable(lg) == [o for o in range(2 * N) if not bases[4] <= o < bases[5]]
        lg.close()


def test_emptied_middle_segment_is_reported(built):
    d, bases = built
    seg_path(d, bases[4]).write_bytes(b"")
    lg = Log(d, CFG, 0, recovery_point=2 * N)
    lg._check()
    assert lg.damaged.ranges == [(bases[4], bases[5])]
    assert not seg_path(d, bases[4]).exists()
    assert offsets_readable(lg) == [o for o in range(2 * N) if not bases[4] <= o < bases[5]]


def test_corrupt_index_costs_nothing(built):
    d, bases = built
    idx = d / f"{bases[2]:020d}.index"
    idx.write_bytes(os.urandom(len(idx.read_bytes()) or 16))
    lg = Log(d, CFG, 0, recovery_point=2 * N)
    lg._check()
    assert lg.damaged.ranges == []
    assert offsets_readable(lg) == list(range(2 * N))


@pytest.mark.parametrize("recovery_point", [None, 8])
def test_garbage_between_batches_of_active_segment(tmp_path, recovery_point):
    """Bytes inserted between two batches: nothing after them is provable. Without a recovery
    point that is a torn tail (truncated); below the recovery point it is damage: the range up
    to the recovery point is recorded and the log end stays."""
    d = tmp_path / "t-0"
    lg = Log(d, LogConfig(), 0)
    for i in range(4):
        lg.append(batch(i), 0)
    lg.close()
    p = seg_path(d, 0)
    raw = p.read_bytes()
    pos = batch_positions(p)[2][0]
    p.write_bytes(raw[:pos] + b"\xff" * 333 + raw[pos:])
    lg = Log(d, LogConfig(), 0, recovery_point=recovery_point)
    lg._check()
    assert p.read_bytes() == raw[:pos]
    if recovery_point is None:
        assert lg.damaged.ranges == [] and lg.log_end_offset == 4
    else:
        assert lg.damaged.ranges == [(4, 8)] and lg.log_end_offset == 8
        assert lg.append(batch(9), 0).base_offset == 8


def test_truncation_and_retention_shrink_the_ranges(tmp_path):
    r = DamagedRanges(tmp_path / "damaged-offsets")
    assert r.add(10, 20) and r.add(30, 40) and not r.add(12, 15)
    r.add(20, 25)  # touching: merged
    assert r.ranges == [(10, 25), (30, 40)]
    assert r.find(24) == (10, 25) and r.find(25) is None and r.next_start(25) == 30
    r.truncate_before(12)
    r.truncate_from(35)
    assert r.ranges == [(12, 25), (30, 35)]
    assert DamagedRanges(tmp_path / "damaged-offsets").ranges == [(12, 25), (30, 35)]
    r.truncate_from(5)
    assert not (tmp_path / "damaged-offsets").exists()
    (tmp_path / "damaged-offsets").write_text("0\n1\n5 3\n")
    with pytest.raises(CheckpointError, match="line 3"):
        DamagedRanges(tmp_path / "damaged-offsets")
