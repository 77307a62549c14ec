"""Damage is never resurrected, never a silent gap, never reuses an offset (review of issue 10
point 5: each test is one of the reviewer's cases)."""

import logging

import pytest

from tests.unit.batchforge import forge
from storage import Log, LogConfig, build_native_batch, decode_native_records, iter_batches
from storage import recovery
from storage.damage import DamagedRanges
from storage.errors import DamagedRangeError
from storage.segment import Segment

pytestmark = pytest.mark.timeout(60)

BIG = LogConfig(segment_bytes=1 << 30, index_interval_bytes=4096)


def records(lg, max_bytes=1 << 20):
    """Every (offset, value) a reader can get, seeking past damaged ranges as a consumer would."""
    got, offset = [], lg.log_start_offset
    while offset < lg.log_end_offset:
        try:
            r = lg.read(offset, max_bytes)
        except DamagedRangeError as exc:
            offset = exc.end
            continue
        for pos, h in iter_batches(r.data):
            got += [(o, v) for o, _t, _k, v, _h in decode_native_records(r.data[pos:pos + h.size])]
        offset = r.next_offset
    return got


def one(value, ts=1000):
    return build_native_batch([(ts, None, value, None)])


def positions(path):
    return list(iter_batches(path.read_bytes()))


def patch(path, pos, xor):
    data = bytearray(path.read_bytes())
    data[pos] ^= xor
    path.write_bytes(bytes(data))


def covered(lg):
    """Offsets served plus offsets in recorded ranges: must be exactly [start, end)."""
    got = [o for o, _ in records(lg)] + [o for s, e in lg.damaged.ranges for o in range(s, e)]
    return sorted(got) == list(range(lg.log_start_offset, lg.log_end_offset))


@pytest.mark.parametrize("recovery_point", [None, 21])
def test_batch_inside_a_record_value_is_never_resurrected(tmp_path, recovery_point):
    """The damaged batch's bytes are never searched: a valid batch stored in a record value
    (base offset 1,000,000) is not served, and the log end does not jump."""
    d = tmp_path / "t-0"
    lg = Log(d, BIG, 0)
    for i in range(10):
        lg.append(one(b"real-%d" % i), 0)
    inner = forge(one(b"EMBEDDED!!"), base_offset=1_000_000)
    lg.append(one(b"outer-" + inner + b"-tail" * 10), 0)
    for i in range(10):
        lg.append(one(b"later-%d" % i), 0)
    lg.close()
    p = d / f"{0:020d}.log"
    pos, _h = positions(p)[10]
    patch(p, pos + 9, 0x40)  # the outer batch's length field
    lg = Log(d, BIG, 0, recovery_point=recovery_point)
    lg._check()
    got = records(lg)
    assert all(b"EMBEDDED" not in v for _, v in got) and all(o < 21 for o, _ in got)
    if recovery_point is None:  # a torn tail: truncated
        assert lg.log_end_offset == 10 and lg.damaged.ranges == []
    else:  # below the recovery point: damage, recorded, the log end stays
        assert lg.log_end_offset == 21 and lg.damaged.ranges == [(10, 21)]
    assert covered(lg)


def bad_crc_at(tmp_path, offset):
    """A flushed log of ten one-record batches; ``offset``'s batch has a bad CRC."""
    d = tmp_path / "t-0"
    lg = Log(d, BIG, 0)
    for i in range(10):
        lg.append(one(b"v%d" % i + b"x" * 50), 0)
    lg.flush()
    lg.close()
    p = d / f"{0:020d}.log"
    pos, _h = positions(p)[offset]
    patch(p, pos + 70, 0xFF)
    return d


def test_damage_at_the_end_found_by_a_read_never_reuses_offsets(tmp_path):
    d = bad_crc_at(tmp_path, 9)  # fsynced and acknowledged: the recovery point is 10
    lg = Log(d, BIG, 0, recovery_point=10)
    with pytest.raises(DamagedRangeError):
        lg.read(9, 1 << 20)
    assert lg.log_end_offset == 10 and lg.damaged.ranges == [(9, 10)]
    assert lg.append(one(b"NEW"), 0).base_offset == 10
    lg._check()
    lg.close()
    lg = Log(d, BIG, 0, recovery_point=11)
    assert lg.damaged.ranges == [(9, 10)] and records(lg)[-1] == (10, b"NEW")


def base_flipped(tmp_path):
    """60 two-record batches over 3 segments; one bit of the base offset (not under the CRC)
    of the second segment's third batch flipped. Returns (dir, config, bases, its header)."""
    cfg = LogConfig(segment_bytes=2000, index_interval_bytes=100)
    d = tmp_path / "t-0"
    lg = Log(d, cfg, 0)
    for i in range(60):
        lg.append(build_native_batch([(1000 + i, None, b"v%d" % i, None), (1000 + i, None, b"w%d" % i, None)]), 0)
    bases = [s.base_offset for s in lg.segments()]
    lg.close()
    p = d / f"{bases[1]:020d}.log"
    pos, h = positions(p)[2]
    patch(p, pos + 7, 0x08)
    return d, cfg, bases, h


def test_flipped_base_offset_in_an_older_segment_is_damage_not_a_gap(tmp_path):
    d, cfg, bases, h = base_flipped(tmp_path)
    lg = Log(d, cfg, 0, recovery_point=None)
    lg._check()
    assert lg.damaged.ranges == [(h.base_offset, bases[2])]
    assert [s.base_offset for s in lg.segments()] == bases  # later segments kept
    assert covered(lg) and lg.log_end_offset == 120


def test_lost_ranges_are_durable_before_the_damaged_bytes_go(tmp_path, monkeypatch):
    d = bad_crc_at(tmp_path, 4)

    def crash(*_args):
        raise KeyboardInterrupt("crash before the swap")

    monkeypatch.setattr(recovery, "remove_damaged_bytes", crash)
    with pytest.raises(KeyboardInterrupt):
        Log(d, BIG, 0, recovery_point=None)
    assert DamagedRanges(d / "damaged-offsets").ranges == [(4, 5)]


def test_malformed_damaged_offsets_file_scans_every_segment(tmp_path):
    """The recorded hole is unknown now: the gap it left is damage up to the recovery point,
    never a silent gap and never a lower log end."""
    d = bad_crc_at(tmp_path, 4)
    lg = Log(d, BIG, 0, recovery_point=10)
    with pytest.raises(DamagedRangeError):
        lg.read(4, 1 << 20)
    lg.close()
    (d / "damaged-offsets").write_text("0\n2\n4 5\n")
    lg = Log(d, BIG, 0, recovery_point=10)
    lg._check()
    assert lg.log_end_offset == 10 and lg.damaged.ranges == [(4, 10)] and covered(lg)


def test_lower_max_message_bytes_keeps_stored_batches(tmp_path):
    d = tmp_path / "t-0"
    lg = Log(d, LogConfig(), 0)
    for i in range(10):
        lg.append(one(b"small" if i % 2 else b"B" * 10000), 0)
    lg.close()
    lg = Log(d, LogConfig(max_message_bytes=4096), 0, recovery_point=None)
    assert lg.log_end_offset == 10 and lg.damaged.ranges == [] and len(records(lg)) == 10


def test_resync_tries_one_candidate_only(tmp_path, monkeypatch):
    """A flipped length over a stretch of 0x02 bytes (a magic byte) costs one candidate, not
    one per position."""
    d = tmp_path / "t-0"
    lg = Log(d, BIG, 0)
    for i in range(5):
        lg.append(one(b"\x02" * 4096 if i == 2 else b"v%d" % i), 0)
    lg.flush()
    lg.close()
    p = d / f"{0:020d}.log"
    pos, _h = positions(p)[2]
    patch(p, pos + 11, 0x10)  # its length, 16 bytes longer: points into the next batch
    calls = []
    real = Segment._check_at
    monkeypatch.setattr(Segment, "_check_at", lambda self, *a: calls.append(a[1]) or real(self, *a))
    lg = Log(d, BIG, 0, recovery_point=5)
    with pytest.raises(DamagedRangeError):
        lg.read(2, 1 << 20)
    assert len(calls) == 4  # batches 0, 1, the damaged one, one candidate
    assert lg.damaged.ranges == [(2, 5)] and lg.log_end_offset == 5


def test_flipped_base_offset_below_the_recovery_point_is_found_by_a_read(tmp_path):
    """A trusted segment is not scanned at open: the read that meets a base offset that does
    not chain repairs it; no offset is served from the wrong batch, none silently skipped."""
    d, cfg, bases, h = base_flipped(tmp_path)
    lg = Log(d, cfg, 0, recovery_point=120)
    assert lg.damaged.ranges == []  # trusted, not scanned
    got = dict(records(lg, max_bytes=1))  # one batch per read
    assert lg.damaged.ranges == [(h.base_offset, bases[2])]
    assert all(got[o] in (b"v%d" % (o // 2), b"w%d" % (o // 2)) for o in got)
    assert covered(lg) and lg.log_end_offset == 120


def test_reads_check_each_crc_once_per_open(tmp_path, monkeypatch):
    from storage import segment as segment_module

    d = tmp_path / "t-0"
    lg = Log(d, BIG, 0)
    for i in range(20):
        lg.append(one(b"v%d" % i * 100), 0)
    checked = []
    real = segment_module.check_crc
    monkeypatch.setattr(segment_module, "check_crc", lambda buf, h: checked.append(h.base_offset) or real(buf, h))
    assert len(records(lg)) == 20 and checked == []  # appended by this process: verified
    lg.close()
    lg = Log(d, BIG, 0, recovery_point=20)  # trusted at open: not CRC-checked yet
    assert len(records(lg)) == 20 and sorted(checked) == list(range(20))
    assert len(records(lg)) == 20 and len(checked) == 20  # not again


def test_a_log_that_was_compacted_keeps_its_gaps_after_the_policy_changes(tmp_path):
    """Compaction leaves gaps; switching the topic to delete later must not make them damage."""
    d = tmp_path / "t-0"
    gappy = LogConfig(allow_offset_gaps=True)
    lg = Log(d, gappy, 0)
    lg.append(forge(one(b"a"), base_offset=0), 0, assign_offsets=False)
    lg.append(forge(one(b"b"), base_offset=5), 0, assign_offsets=False)
    lg.config = LogConfig()  # the policy changed to delete
    assert records(lg) == [(0, b"a"), (5, b"b")]
    lg.close()
    lg = Log(d, LogConfig(), 0, recovery_point=None)
    assert lg.damaged.ranges == [] and records(lg) == [(0, b"a"), (5, b"b")] and lg.log_end_offset == 6


def test_the_offset_gaps_marker_is_a_known_file(tmp_path, caplog):
    """Every compacted partition logged 'ignoring unknown file .../offset-gaps' at each open."""
    d = tmp_path / "t-0"
    lg = Log(d, LogConfig(allow_offset_gaps=True), 0)
    lg.append(forge(one(b"a"), base_offset=0), 0, assign_offsets=False)
    lg.close()
    caplog.set_level(logging.WARNING, logger="storage.log")
    Log(d, LogConfig(allow_offset_gaps=True), 0).close()
    assert not [r for r in caplog.records if "unknown file" in r.getMessage()]
