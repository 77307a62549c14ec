"""Seeded random operations against a plain-list model, with ``Log._check()`` after each.

Segments are tiny (``segment_bytes=300``) and so is the index interval, so rolls, index
entries, multi-segment reads and whole-segment deletions happen constantly; so do deletions of
records up to any offset (a log start inside a segment and inside a batch).
"""

import random

import pytest

from storage import (
    Log, LogConfig, OffsetOutOfRange, build_native_batch, decode_native_records, iter_batches,
)

pytestmark = pytest.mark.timeout(120)

CFG = LogConfig(segment_bytes=300, index_interval_bytes=70)


class Model:
    """The log as a list of batches: ``(base_offset, [(timestamp, value)], size)``; the first
    may hold records below ``start`` (deleted, but their batch is still stored)."""

    def __init__(self):
        self.batches = []
        self.start = 0
        self.epochs = []  # (epoch, start_offset)

    @property
    def leo(self):
        if not self.batches:
            return self.start
        base, recs, _ = self.batches[-1]
        return base + len(recs)

    def records(self):
        return [(b + i, ts, v) for b, recs, _ in self.batches for i, (ts, v) in enumerate(recs)]

    def index_of(self, offset):
        for i, (b, recs, _) in enumerate(self.batches):
            if b <= offset < b + len(recs):
                return i
        raise KeyError(offset)

    def expected_read(self, offset, max_bytes, max_offset):
        out, used = [], 0
        for base, recs, size in self.batches[self.index_of(offset):]:
            if max_offset is not None and base >= max_offset:
                break
            if out and used + size > max_bytes:
                break
            out.append(base)
            used += size
        return out

    def move_start(self, new_start):
        """The log start moved up to ``new_start``: batches wholly below it go, the leader
        epoch covering it now starts there."""
        while self.batches and self.batches[0][0] + len(self.batches[0][1]) <= new_start:
            self.batches.pop(0)
        self.start = new_start
        assert not self.batches or self.batches[0][0] <= new_start
        keep = [e for e in self.epochs if e[1] <= new_start]
        self.epochs = ([(keep[-1][0], new_start)] if keep else []) + [e for e in self.epochs if e[1] > new_start]

    def truncate_to(self, offset):
        if offset >= self.leo:  # the records stay; epochs starting at or after offset go
            self.epochs = [e for e in self.epochs if e[1] < offset]
            return
        if offset <= self.start:
            self.batches, self.start, self.epochs = [], offset, []
            return
        i = self.index_of(offset)
        if self.batches[i][0] < self.start:  # the batch holding the start goes: empty at the start
            self.batches, self.epochs = [], []
            return
        del self.batches[i:]
        self.epochs = [e for e in self.epochs if e[1] < self.leo]


def decode_all(data):
    return [rec for pos, h in iter_batches(data) for rec in decode_native_records(data[pos:pos + h.size])]


def check_contents(lg, model):
    if model.leo == model.start:
        assert lg.read(model.start, 10**6).batch_count == 0
        return
    got = [(o, ts, v) for o, ts, _k, v, _h in decode_all(lg.read(model.start, 10**7).data)]  # from the start's batch
    assert got == model.records()


def run(tmp_path, seed, ops):
    rng = random.Random(seed)
    d = tmp_path / f"s{seed}-0"
    lg = Log(d, CFG, now_ms=0)
    model = Model()
    now, ts_clock, epoch, counter = 0, 10_000, 0, 0
    for step in range(ops):
        now += rng.randint(0, 50)
        r = rng.random()
        if r < 0.45:
            n = rng.randint(1, 4)
            recs = []
            for _ in range(n):
                ts_clock += rng.randint(-30, 60)
                counter += 1
                recs.append((ts_clock, b"v%d" % counter))
            if rng.random() < 0.03:
                epoch += 1
            batch = build_native_batch([(ts, b"k", v, None) for ts, v in recs])
            info = lg.append(batch, now, leader_epoch=epoch)
            assert info.base_offset == model.leo and info.record_count == n and info.size == len(batch)
            if not model.epochs or epoch > model.epochs[-1][0]:
                model.epochs = [e for e in model.epochs if e[1] < model.leo] + [(epoch, model.leo)]
            model.batches.append((info.base_offset, recs, len(batch)))
        elif r < 0.70:
            off = rng.randint(model.start - 2, model.leo + 2)
            max_bytes = rng.choice([0, 1, 100, 200, 500, 2000, 10**6])
            max_offset = rng.choice([None, None, rng.randint(model.start, model.leo + 1)])
            if off < model.start or off > model.leo:
                with pytest.raises(OffsetOutOfRange):
                    lg.read(off, max_bytes, max_offset)
                continue
            res = lg.read(off, max_bytes, max_offset)
            if off == model.leo:
                assert res == (b"", off, off, 0)
                continue
            bases = model.expected_read(off, max_bytes, max_offset)
            got = [h.base_offset for _, h in iter_batches(res.data)]
            assert got == bases, (step, off, max_bytes, max_offset)
            assert res.batch_count == len(bases)
            if bases:
                last = model.batches[model.index_of(bases[-1])]
                assert (res.first_offset, res.next_offset) == (bases[0], last[0] + len(last[1]))
                assert len(res.data) == sum(model.batches[model.index_of(b)][2] for b in bases)
            else:
                assert (res.data, res.first_offset, res.next_offset) == (b"", off, off)
        elif r < 0.77:
            off = rng.randint(max(0, model.start - 3), model.leo + 3)
            lg.truncate_to(off)
            model.truncate_to(off)
        elif r < 0.80:
            off = rng.randint(model.start, model.leo + 3)
            before = [s.base_offset for s in lg.segments()]
            n = lg.delete_segments_before(off)
            assert before[n:] == [s.base_offset for s in lg.segments()]
            assert lg.log_start_offset <= max(off, model.start)
            model.move_start(lg.log_start_offset)
        elif r < 0.84:
            off = rng.randint(model.start - 3, model.leo + 2)
            if off > model.leo:
                with pytest.raises(OffsetOutOfRange):
                    lg.delete_records_before(off)
                continue
            assert lg.delete_records_before(off) == max(off, model.start)
            model.move_start(max(off, model.start))
        elif r < 0.88:
            lg.roll(now)
        elif r < 0.92:
            ts = rng.randint(9_000, ts_clock + 100)
            want = next(((o, t) for o, t, _ in model.records() if t >= ts and o >= model.start), None)
            assert lg.offset_for_timestamp(ts) == want
        elif r < 0.95:
            lg.flush(now)
        elif r < 0.975:
            lg.close()
            lg = Log(d, CFG, now_ms=now, recovery_point=model.leo)
        else:
            # crash: no flush, no index write-back; recover from the recovery point or fully
            rp = rng.choice([None, lg.recovery_point])
            lg.handles.close_all()
            lg = Log(d, CFG, now_ms=now, recovery_point=rp)
        if r >= 0.95:  # reopened: an epoch that starts at the log end (no record yet) is forgotten
            model.epochs = [e for e in model.epochs if e[1] < model.leo]
        lg._check()
        assert (lg.log_start_offset, lg.log_end_offset) == (model.start, model.leo), step
        assert lg.leader_epoch_cache.entries == model.epochs, step
        if step % 100 == 0:
            check_contents(lg, model)
    check_contents(lg, model)
    lg.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_ops_against_model(tmp_path, seed):
    run(tmp_path, seed, 2000)
