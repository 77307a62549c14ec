"""The fetcher past what it cannot read: good records first, then the error, a seek skips it.

And bounded: no batch decompresses past ``fetch_max_bytes``, one poll step decodes about that
much, and a parked partition is neither refetched nor buffered.
"""

from __future__ import annotations

import tracemalloc

import pytest

from clients.consumer.fetcher import Fetcher
from storage.batch import COMPRESSION_ZSTD, build_native_batch
from tests.unit.clients.clientfakes import FakeMeta, FakeNet, reseal
from tests.unit.clients.test_fetcher import LEADER, TP, TP1, answer, batch, collect, ok, position
from zbroker.errors import CorruptMessageError, CorruptRecordError, DecompressionLimitExceededError

GARBAGE = b"\xc1\xc1\xc1 not msgpack"  # 0xc1 is never used in msgpack


def unreadable(base_offset, n):
    """A native batch of ``n`` records whose payload is not msgpack, inside a valid CRC."""
    return reseal(batch(base_offset, n), GARBAGE)


def fetcher(**kw):
    net = FakeNet()
    kw = {"fetch_max_wait_ms": 500, "fetch_min_bytes": 1, "max_partition_fetch_bytes": 1 << 20, **kw}
    f = Fetcher(net, FakeMeta({TP: LEADER, TP1: LEADER}), auto_offset_reset="earliest", **kw)
    f.set_assignment([TP])
    f.seek(TP, 0)
    f.run(0.0)
    return f, net


def fetches(net):
    return net.of_kind("fetch")


def test_records_before_an_unreadable_batch_come_first_then_the_error_then_seek_skips_it():
    f, net = fetcher()
    answer(fetches(net)[0], [ok()], [batch(0, 3) + batch(3, 2) + unreadable(5, 4) + batch(9, 2)])
    assert [r.offset for r in collect(f)] == [0, 1, 2, 3, 4]
    assert position(f) == 5  # at the bad batch
    with pytest.raises(CorruptRecordError, match=r"t-0: batch at offset 5: .*seek\('t', 0, 9\)") as info:
        collect(f)
    exc = info.value
    assert isinstance(exc, CorruptMessageError) and (exc.topic, exc.partition, exc.offset, exc.next_offset) == ("t", 0, 5, 9)
    assert position(f) == 5
    f.seek(TP, exc.next_offset)
    f.run(0.0)
    refetch = fetches(net)[-1]
    assert refetch.fields["partitions"][0]["offset"] == 9  # the records after it are fetched again
    answer(refetch, [ok()], [batch(9, 2)])
    assert [r.offset for r in collect(f)] == [9, 10] and position(f) == 11


def test_a_poll_cut_short_by_max_records_still_returns_every_good_record_before_the_error():
    f, net = fetcher()
    answer(fetches(net)[0], [ok()], [batch(0, 5) + unreadable(5, 1)])
    assert [r.offset for r in collect(f, 2)] == [0, 1]
    assert [r.offset for r in collect(f, 2)] == [2, 3]
    assert [r.offset for r in collect(f, 2)] == [4]
    with pytest.raises(CorruptRecordError):
        collect(f, 2)


def test_an_unreadable_batch_in_a_later_fetch_answer():
    f, net = fetcher()
    answer(fetches(net)[0], [ok()], [batch(0, 2)])
    f.run(0.0)
    answer(fetches(net)[1], [ok()], [unreadable(2, 2) + batch(4, 1)])
    assert [r.offset for r in collect(f)] == [0, 1]
    with pytest.raises(CorruptRecordError, match="batch at offset 2"):
        collect(f)


def test_a_parked_partition_raises_the_same_error_every_poll_without_refetching_or_buffering():
    f, net = fetcher()
    f.run(0.0)  # nothing more to send: one fetch in flight
    answer(fetches(net)[0], [ok()], [unreadable(0, 3)])
    errors = []
    for _ in range(50):
        with pytest.raises(CorruptRecordError) as info:
            collect(f)
        errors.append(info.value)
        assert f.run(0.0) is None  # nothing to wait for, nothing sent
    assert len(fetches(net)) == 1 and all(e is errors[0] for e in errors)
    assert f.buffered_total == 0 and not f.completed and position(f) == 0


def test_an_answer_in_flight_when_the_partition_parks_is_dropped():
    f, net = fetcher()
    f.set_assignment([TP, TP1])
    f.seek(TP1, 0)
    answer(fetches(net)[0], [ok()], [unreadable(0, 1)])
    f.run(0.0)  # TP1 and a fetch ahead for TP go out together
    ahead = fetches(net)[-1]
    assert [p["partition"] for p in ahead.fields["partitions"]] == [0, 1]
    with pytest.raises(CorruptRecordError):
        collect(f)  # TP parks
    answer(ahead, [ok(), ok()], [batch(1, 2), batch(0, 1)])
    assert f.states[TP].buffered == 0
    with pytest.raises(CorruptRecordError):  # the parked partition's error comes first
        collect(f)
    f.seek(TP, 1)
    assert [(r.partition, r.offset) for r in collect(f)] == [(1, 0)]


def test_a_bomb_batch_is_over_fetch_max_bytes_and_memory_stays_bounded():
    limit = 1 << 20
    f, net = fetcher(max_partition_fetch_bytes=64 << 10, fetch_max_bytes=limit)
    bomb = build_native_batch([(1000, None, bytes(64 * limit), None)], base_offset=1, compression=COMPRESSION_ZSTD)
    answer(fetches(net)[0], [ok()], [batch(0, 1) + bomb + batch(2, 1)])
    tracemalloc.start()
    try:
        assert [r.offset for r in collect(f)] == [0]
        with pytest.raises(DecompressionLimitExceededError, match=r"t-0: batch at offset 1: .*fetch_max_bytes") as info:
            collect(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit, peak
    assert (info.value.offset, info.value.next_offset) == (1, 2)
    assert isinstance(info.value, CorruptRecordError)


def test_a_legit_highly_compressible_batch_of_a_mebibyte_is_read():
    value = bytes(1 << 10)
    big = build_native_batch([(1000, None, value, None)] * 1024, base_offset=0, compression=COMPRESSION_ZSTD)
    assert len(big) < 16 << 10
    f, net = fetcher()  # defaults: 1 MiB per partition, 50 MiB per fetch
    answer(fetches(net)[0], [ok()], [big])
    recs = collect(f, 2000)
    assert len(recs) == 1024 and all(r.value == value for r in recs)


def test_one_step_decodes_about_fetch_max_bytes_and_the_rest_waits_in_front():
    limit = 256 << 10
    f, net = fetcher(max_partition_fetch_bytes=64 << 10, fetch_max_bytes=limit)
    chunk = b"".join(build_native_batch([(1000, None, bytes(100 << 10), None)], base_offset=i, compression=COMPRESSION_ZSTD)
                     for i in range(10))  # ~1 MiB of records in a few kilobytes
    answer(fetches(net)[0], [ok()], [chunk])
    with f.lock:
        first = f.collect(1)
        assert sum(len(r.value) for r in f.partial[2]) <= 2 * limit  # three batches decoded, not ten
        assert len(f.completed) == 1 and f.buffered_total == f.states[TP].buffered > 0
    assert [r.offset for r in first + collect(f)] == list(range(10))  # nothing lost
    assert f.buffered_total == 0 and position(f) == 10


def test_decoding_does_not_make_the_garbage_collector_scan_every_chunk():
    """The decode step pauses the cyclic collector and allocates nothing on the way out:
    otherwise the first container allocated after it scans every record just decoded, once
    per chunk (20% of the consume path)."""
    import gc

    f, net = fetcher()
    answer(fetches(net)[0], [ok()], [b"".join(batch(550 * i, 550) for i in range(4))])
    chunks = 40
    for i in range(1, chunks):
        st = f.states[TP]
        data = b"".join(batch(2200 * i + 550 * j, 550) for j in range(4))
        st.buffered += len(data)
        f.buffered_total += len(data)
        f.completed.append((TP, st.epoch, data))
    runs = []

    def count(phase, info):
        if phase == "start":
            runs.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        got = 0
        while got < 2200 * chunks:
            got += len(collect(f, 2200))
    finally:
        gc.callbacks.remove(count)
    assert got == 2200 * chunks and len(runs) < chunks // 4, runs
