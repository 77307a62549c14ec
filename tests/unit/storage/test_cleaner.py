"""Log compaction (storage.cleaner): latest value per key, tombstones, gaps, slices, crash safety."""

import os
import random
import shutil

import pytest

from storage import Log, LogConfig, build_native_batch, decode_native_records, iter_batches
import storage.cleaner
from storage.cleaner import CLEANED_SUFFIX, SWAP_SUFFIX, Cleaner, clean, dirty_ratio

pytestmark = pytest.mark.timeout(60)

# compaction leaves offset gaps: a compacted log says so (as the broker's log_config does), or
# recovery reports a gap between segments as damage
CFG = LogConfig(segment_bytes=600, index_interval_bytes=64, allow_offset_gaps=True)
DAY = 86_400_000


def make(d, cfg=CFG):
    return Log(d, cfg, now_ms=0)


def put(lg, items, ts):
    """Append one batch of ``(key, value)`` records at time ``ts``."""
    return lg.append(build_native_batch([(ts + i, k, v, None) for i, (k, v) in enumerate(items)]), now_ms=ts)


def records(lg):
    """Every record of the log as ``(offset, key, value)``, read from the start."""
    r = lg.read(lg.log_start_offset, 10**9)
    out = []
    for pos, h in iter_batches(r.data):
        out += [(o, k, v) for o, _ts, k, v, _h in decode_native_records(r.data[pos:pos + h.size])]
    offsets = [o for o, _, _ in out]
    assert offsets == sorted(set(offsets))
    return out


def expected_after_clean(recs, active_base, drop_tombstones=False):
    latest = {}
    for o, k, _v in recs:
        if k is not None:
            latest[k] = o
    return [(o, k, v) for o, k, v in recs
            if o >= active_base or k is None or (latest[k] == o and not (v is None and drop_tombstones))]


def fill(lg, n=120, keys=10, ts=1000):
    for i in range(n):
        size = 1 + i % 3
        put(lg, [(b"k%d" % ((i * 7 + j) % keys), b"v%d-%d" % (i, j)) for j in range(size)], ts + i)


def test_keeps_latest_per_key_offsets_preserved_and_reopen(tmp_path):
    d = tmp_path / "t-0"
    lg = make(d)
    fill(lg)
    put(lg, [(None, b"nokey")], 5000)
    fill(lg, n=6, ts=6000)  # some keys overwritten in the active segment
    assert len(lg.segments()) > 5
    before = records(lg)
    start, leo, active_base = lg.log_start_offset, lg.log_end_offset, lg.active_segment.base_offset
    size_before = lg.size_bytes()
    res = clean(lg, now_ms=10_000, delete_retention_ms=DAY)
    assert not res.aborted and res.segments_cleaned > 0 and res.records_removed > 0
    assert res.bytes_after < res.bytes_before and lg.size_bytes() < size_before
    want = expected_after_clean(before, active_base)
    assert records(lg) == want
    assert (None, b"nokey") in [(k, v) for _, k, v in want]
    assert (lg.log_start_offset, lg.log_end_offset) == (start, leo)
    lg._check()
    again = clean(lg, now_ms=10_000, delete_retention_ms=DAY)
    assert not again.aborted and again.segments_cleaned == 0
    put(lg, [(b"k1", b"after")], 20_000)
    lg._check()
    want = records(lg)
    lg.close()
    lg2 = make(d)
    lg2._check()
    assert records(lg2) == want and lg2.log_end_offset == leo + 1
    lg2.close()
    lg3 = Log(d, CFG, now_ms=0, recovery_point=leo + 1)  # trusted open path, indexes from files
    lg3._check()
    assert records(lg3) == want


def test_tombstones_expire_after_delete_retention(tmp_path):
    lg = make(tmp_path / "t-0")
    put(lg, [(b"a", b"1"), (b"b", b"1")], 1000)
    put(lg, [(b"a", None)], 2000)  # tombstone
    for i in range(30):
        put(lg, [(b"c%d" % (i % 3), b"x" * 20)], 3000 + i)
    tomb_seg = lg.segments()[0]
    assert tomb_seg.next_offset > 2 and len(lg.segments()) > 2
    clean(lg, now_ms=tomb_seg.max_timestamp + 500, delete_retention_ms=1000)
    state = {k: v for _, k, v in records(lg)}
    assert state[b"a"] is None and state[b"b"] == b"1"
    assert (2, b"a", None) in records(lg) and all(o != 0 for o, _, _ in records(lg))
    lg._check()
    res = clean(lg, now_ms=tomb_seg.max_timestamp + 1001, delete_retention_ms=1000)
    assert res.records_removed >= 1
    assert b"a" not in {k for _, k, _ in records(lg)}
    assert lg.log_start_offset == 0
    lg._check()


def test_read_in_a_compacted_gap_returns_next_record(tmp_path):
    lg = make(tmp_path / "t-0")
    fill(lg, n=60, keys=4)
    active_base = lg.active_segment.base_offset
    clean(lg, now_ms=10_000, delete_retention_ms=DAY)
    lg._check()
    kept = [o for o, _, _ in records(lg)]
    gaps = [o for o in range(lg.log_start_offset, lg.log_end_offset) if o not in kept]
    assert gaps and any(s.next_offset < n.base_offset for s, n in zip(lg.segments(), lg.segments()[1:]))
    for o in gaps:
        nxt = min(k for k in kept if k > o)
        r = lg.read(o, 1)
        got = [x[0] for p, h in iter_batches(r.data) for x in decode_native_records(r.data[p:p + h.size])]
        assert r.batch_count == 1 and r.first_offset == got[0] == nxt and o < active_base
    for o in kept:
        r = lg.read(o, 1)
        assert r.first_offset <= o < r.next_offset


def state_of(recs):
    """key -> value after replaying ``(offset, key, value)`` records (tombstones remove)."""
    state: dict = {}
    for _o, k, v in recs:
        if v is None:
            state.pop(k, None)
        else:
            state[k] = v
    return state


def step_until(cleaner, predicate, budget=200):
    for _ in range(10_000):
        if predicate():
            return
        assert not cleaner.step(10_000, budget), "the pass ended first"
    raise AssertionError("condition never reached")


def test_interrupted_before_commit_keeps_original(tmp_path):
    d = tmp_path / "t-0"
    lg = make(d)
    fill(lg, n=40, keys=3)
    before = records(lg)
    cleaned = d / (lg.segments()[0].log_path.name + ".cleaned")
    cleaner = Cleaner(lg, DAY)
    step_until(cleaner, cleaned.exists)  # a rewrite half written: then the process dies
    assert cleaned.name.endswith(CLEANED_SUFFIX)
    lg.close()
    lg = make(d)
    assert not cleaned.exists()
    assert records(lg) == before
    lg._check()


@pytest.mark.parametrize("indexes_gone", [False, True])
def test_interrupted_after_commit_finishes_swap(tmp_path, monkeypatch, indexes_gone):
    d, ref = tmp_path / "t-0", tmp_path / "ref"
    lg = make(d)
    fill(lg, n=40, keys=3)
    lg.close()
    shutil.copytree(d, ref)
    lg = make(d)
    before = records(lg)
    seg = lg.segments()[0]
    size_before = seg.size

    def crash(*_args):
        raise RuntimeError("crash after the commit point")

    monkeypatch.setattr(storage.cleaner, "_finish_swap", crash)
    with pytest.raises(RuntimeError):
        clean(lg, 10_000, DAY)
    monkeypatch.undo()
    swap = d / (seg.log_path.name + ".swap")
    assert swap.name.endswith(SWAP_SUFFIX) and swap.exists() and seg.log_path.exists()
    lg.close()
    if indexes_gone:
        os.unlink(seg.index.path)
        os.unlink(seg.time_index.path)
    lg = make(d)
    assert not swap.exists()
    lg._check()
    assert lg.segments()[0].size < size_before  # the cleaned copy is in place
    assert state_of(records(lg)) == state_of(before)
    rl = make(ref)
    clean(rl, 10_000, DAY)
    clean(lg, 10_000, DAY)
    assert records(lg) == records(rl)


def test_bounded_steps_finish_the_job_while_reads_go_on(tmp_path, caplog):
    caplog.set_level("INFO", logger="storage.segment")
    d, ref = tmp_path / "t-0", tmp_path / "ref"
    lg = make(d)
    fill(lg, n=150)
    lg.close()
    shutil.copytree(d, ref)
    lg, rl = make(d), make(ref)
    want_state = state_of(records(lg))
    clean(rl, 10_000, DAY)
    cleaner = Cleaner(lg, DAY)
    steps = 0
    while not cleaner.step(10_000, 1000):
        steps += 1
        lg._check()
        assert state_of(records(lg)) == want_state  # the log reads right between any two steps
        assert steps < 1000
    assert steps > 10 and cleaner.result().segments_cleaned > 2
    assert records(lg) == records(rl)
    # the rewritten segments' indexes were built while writing: nothing was read back or rebuilt
    assert "rebuilding indexes" not in caplog.text
    assert not list(d.glob("*.cleaned"))
    lg.close()
    reopened = Log(d, CFG, now_ms=0, recovery_point=rl.log_end_offset)  # trusts the index files
    reopened._check()
    assert records(reopened) == records(rl)


def test_appends_during_a_pass_are_left_alone(tmp_path):
    lg = make(tmp_path / "t-0")
    fill(lg, n=80, keys=5)
    cleaner = Cleaner(lg, DAY)
    map_end = cleaner.map_end
    for i in range(40):  # new values of every key land beyond the map: nothing newer is known yet
        put(lg, [(b"k%d" % (i % 5), b"late%d" % i)], 50_000 + i)
        cleaner.step(10_000, 300)
    while not cleaner.step(10_000, 300):
        pass
    lg._check()
    recs = records(lg)
    assert [r for r in recs if r[0] >= map_end] == [(o, b"k%d" % (i % 5), b"late%d" % i)
                                                  for i, o in enumerate(range(map_end, map_end + 40))]
    assert cleaner.result().cleaned_up_to <= map_end


def test_truncation_or_close_aborts_the_pass_and_drops_the_half_written_copy(tmp_path):
    d = tmp_path / "t-0"
    lg = make(d)
    fill(lg, n=60, keys=3)
    cleaned = d / (lg.segments()[0].log_path.name + ".cleaned")
    cleaner = Cleaner(lg, DAY)
    step_until(cleaner, cleaned.exists)
    lg.truncate_to(lg.log_end_offset - 3)
    before = records(lg)
    assert cleaner.step(10_000, 1 << 20)
    assert cleaner.result().aborted and not cleaned.exists()
    assert records(lg) == before
    lg._check()
    cleaner = Cleaner(lg, DAY)
    step_until(cleaner, cleaned.exists)
    lg.close()
    assert cleaner.step(10_000, 1 << 20) and cleaner.result().aborted and not cleaned.exists()


def test_a_segment_deleted_by_retention_mid_pass_is_skipped(tmp_path):
    lg = make(tmp_path / "t-0")
    fill(lg, n=60, keys=3)
    first = lg.segments()[0]
    cleaned = first.directory / (first.log_path.name + ".cleaned")
    cleaner = Cleaner(lg, DAY)
    step_until(cleaner, cleaned.exists)
    lg.delete_segments_before(lg.segments()[1].base_offset)
    while not cleaner.step(10_000, 300):
        pass
    res = cleaner.result()
    assert not res.aborted and res.segments_cleaned > 0 and not cleaned.exists()
    lg._check()
    closed = [x for x in records(lg) if x[0] < lg.active_segment.base_offset]
    later = {k for o, k, _ in records(lg) if o >= lg.active_segment.base_offset}
    assert len({k for _, k, _ in closed}) == len(closed) and not later & {k for _, k, _ in closed}


def test_a_full_key_map_cuts_the_pass_short(tmp_path):
    lg = make(tmp_path / "t-0")
    for i in range(60):  # every key new: the map fills
        put(lg, [(b"u%d" % i, b"x" * 10), (b"same", b"%d" % i)], 1000 + i)
    cleaner = Cleaner(lg, DAY, max_map_keys=20)
    while not cleaner.step(10_000, 1 << 20):
        pass
    res = cleaner.result()
    assert cleaner.map_end < lg.log_end_offset and res.cleaned_up_to <= cleaner.map_end
    assert res.records_removed > 0
    untouched = [x for x in records(lg) if x[0] >= res.cleaned_up_to]
    assert [v for _, k, v in untouched if k == b"same"]  # older copies beyond the map stay for now
    lg._check()
    clean(lg, 10_000, DAY)  # a pass with room for every key finishes the job
    closed = [x for x in records(lg) if x[0] < lg.active_segment.base_offset]
    assert len({k for _, k, _ in closed}) == len(closed)


def test_dirty_ratio(tmp_path):
    lg = make(tmp_path / "t-0")
    assert dirty_ratio(lg, 0) == 0.0  # no closed segment
    fill(lg, n=80)
    assert dirty_ratio(lg, lg.log_start_offset) == 1.0
    res = clean(lg, 10_000, DAY)
    cleaned_to = lg.active_segment.base_offset
    assert res.cleaned_up_to == cleaned_to
    assert dirty_ratio(lg, cleaned_to) == 0.0
    fill(lg, n=40, ts=20_000)
    r = dirty_ratio(lg, cleaned_to)
    assert 0.0 < r < 1.0


def test_opaque_batches_kept_whole(tmp_path):
    lg = make(tmp_path / "t-0")
    b = bytearray(build_native_batch([(1000, b"k", b"old", None), (1001, b"k", b"old2", None)]))
    b[16] = 2  # magic 2 (Kafka records): the CRC does not cover the magic byte
    lg.append(bytes(b), 1000, leader_epoch=3)
    stored = lg.read(0, 1).data
    for i in range(30):
        put(lg, [(b"k", b"new%d" % i)], 2000 + i)
    res = clean(lg, 10_000, DAY)
    assert res.records_removed > 0
    assert lg.read(0, 1).data == stored
    lg._check()


def test_max_offset_bounds_what_is_cleaned(tmp_path):
    lg = make(tmp_path / "t-0")
    fill(lg, n=80)
    before = records(lg)
    res = clean(lg, 10_000, DAY, max_offset=lg.segments()[1].base_offset)
    assert res.segments_cleaned <= 1
    first_base = lg.segments()[1].base_offset
    assert [x for x in records(lg) if x[0] >= first_base] == [x for x in before if x[0] >= first_base]
    lg._check()


def test_random_against_model(tmp_path):
    """Appends interleaved with the steps of passes of random budgets, checked against a dict."""
    rnd = random.Random(1234)
    d = tmp_path / "t-0"
    lg = make(d)
    model: dict[bytes, bytes] = {}
    epochs: dict[int, int] = {}
    now = 1000
    cleaner = None
    for step in range(600):
        now += rnd.randint(1, 50)
        items = []
        for _ in range(rnd.randint(1, 4)):
            k = b"k%d" % rnd.randrange(30)
            v = None if rnd.random() < 0.2 else b"v%d" % step
            items.append((k, v))
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        info = lg.append(build_native_batch([(now, k, v, None) for k, v in items]), now, leader_epoch=step // 100)
        epochs.update({o: step // 100 for o in range(info.base_offset, info.last_offset + 1)})
        if cleaner is None and rnd.random() < 0.08:
            cleaner = Cleaner(lg, rnd.choice([0, 100, 5000, DAY]))
        if cleaner is not None:
            if cleaner.step(now, rnd.choice([1, 300, 2000, 1 << 20])):
                res = cleaner.result()
                assert res.bytes_after <= res.bytes_before and not res.aborted
                cleaner = None
            lg._check()
            assert state_of(records(lg)) == model, step
            data = lg.read(lg.log_start_offset, 10**9).data
            assert all(h.leader_epoch == epochs[h.base_offset] for _, h in iter_batches(data))
    while cleaner is not None and not cleaner.step(now, 1 << 30):
        pass
    clean(lg, now + DAY, 0)
    lg._check()
    final = records(lg)
    lg.close()
    lg = make(d)
    lg._check()
    assert records(lg) == final
    closed = [x for x in final if x[0] < lg.active_segment.base_offset]
    assert len({k for _, k, _ in closed}) == len(closed)  # one record per key left in closed segments
    assert all(v is not None for _, _, v in closed)


def test_a_replica_of_a_compacted_log_accepts_batches_past_its_end(tmp_path):
    from storage import Log, LogConfig, build_native_batch
    from storage.errors import OffsetMismatch

    strict = Log(tmp_path / "strict", LogConfig(), 0)
    gappy = Log(tmp_path / "gappy", LogConfig(allow_offset_gaps=True), 0)
    batch = build_native_batch([(1, b"k", b"v", None)], base_offset=5)
    with pytest.raises(OffsetMismatch):
        strict.append(batch, 0, assign_offsets=False)
    gappy.append(batch, 0, assign_offsets=False)
    assert gappy.log_end_offset == 6
    assert gappy.read(0, 1 << 20).data == batch  # an offset in the gap reads the next batch
    gappy.close()
    reopened = Log(tmp_path / "gappy", LogConfig(allow_offset_gaps=True), 0)  # recovery accepts the gap
    assert reopened.log_end_offset == 6
    reopened.close()
    strict.close()


def test_each_producers_last_batch_stays_whole(tmp_path):
    """So producer state rebuilt from headers still knows every producer's last sequence."""
    from storage import Log, LogConfig, build_native_batch
    from storage.cleaner import clean

    lg = Log(tmp_path / "p", LogConfig(segment_bytes=400, allow_offset_gaps=True), 0)
    last = build_native_batch([(1, b"a", b"1", None), (1, b"b", b"1", None)], producer_id=7, producer_epoch=0, base_sequence=0)
    lg.append(last, 0)
    for i in range(20):  # newer values for both keys, from no producer, rolling segments
        lg.append(build_native_batch([(1, b"a", b"%d" % i, None), (1, b"b", b"%d" % i, None)]), 0)
    clean(lg, 0, delete_retention_ms=0)
    first = next(h for s in lg.segments() for _p, h in s.iter_headers())
    assert (first.producer_id, first.base_sequence, first.record_count) == (7, 0, 2)
    lg._check()
    lg.close()
