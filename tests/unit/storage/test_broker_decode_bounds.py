"""The broker's own decodes of stored batches are bounded (storage.batch.decode_limit).

list_offsets by timestamp and the cleaner decode native batches record by record; a batch of
a few KiB on disk that decompresses to tens of MiB must cost them about the bound, not the
bomb: list_offsets answers it by its base offset and the cleaner keeps it whole.
"""

from __future__ import annotations

import tracemalloc

import pytest
import zstandard

import storage.batch
from storage import Log, LogConfig, build_native_batch, iter_batches
from storage.batch import COMPRESSION_ZSTD, decode_limit, decode_native_records
from storage.cleaner import clean
from storage.compression import DecompressionLimitError

pytestmark = pytest.mark.timeout(60)

MAX_MESSAGE = 16 * 1024
LIMIT = decode_limit(MAX_MESSAGE)  # 1 MiB
BOMB = 32 * LIMIT
CFG = LogConfig(segment_bytes=600, index_interval_bytes=64, allow_offset_gaps=True, max_message_bytes=MAX_MESSAGE)


@pytest.fixture(params=["sized", "unsized"])
def bomb(request, monkeypatch):
    """A native zstd batch of key b"k" at t=5000 (value: BOMB zero bytes) and b"v" at t=6000;
    "unsized" frames do not declare their content size, so only decompressing finds it."""
    if request.param == "unsized":
        unsized = zstandard.ZstdCompressor(write_content_size=False)
        monkeypatch.setattr(storage.batch, "compress", lambda codec, data, **_: unsized.compress(data))
    batch = build_native_batch([(5000, b"k", bytes(BOMB), None), (6000, b"k", b"v", None)],
                               compression=COMPRESSION_ZSTD)
    monkeypatch.undo()
    assert len(batch) < MAX_MESSAGE
    return batch


def _peak(fn):
    tracemalloc.start()
    try:
        return fn(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decode_native_records_stops_at_max_size(bomb):
    with pytest.raises(DecompressionLimitError, match=f"over the limit of {LIMIT} bytes"):
        decode_native_records(bomb, LIMIT)
    small = build_native_batch([(5000, b"k", bytes(1000), None)], compression=COMPRESSION_ZSTD)
    assert decode_native_records(small, 1000 + 64) == decode_native_records(small)  # no bound: as before


def test_list_offsets_by_time_answers_a_bomb_batch_by_its_base_offset(tmp_path, bomb):
    lg = Log(tmp_path, CFG, now_ms=0)
    lg.append(build_native_batch([(1000, b"a", b"1", None)]), 0)
    lg.append(bomb, 0)  # offsets 1 (t=5000) and 2 (t=6000)
    got, peak = _peak(lambda: lg.offset_for_timestamp(5500))
    # record-granular would be (2, 6000): the bomb is answered as a batch that does not decode
    assert got == (1, 6000)
    assert peak < LIMIT + (2 << 20), peak
    lg.close()


def test_one_cleaner_pass_keeps_a_bomb_batch_whole(tmp_path, bomb):
    lg = Log(tmp_path, CFG, now_ms=0)
    lg.append(build_native_batch([(1000, b"a", b"old", None)]), 0)  # offset 0, superseded below
    lg.append(bomb, 0)  # offsets 1-2, key b"k": superseded below, but does not decode in bounds
    for i in range(12):
        lg.append(build_native_batch([(7000 + i, b"a" if i < 6 else b"k", b"new%d" % i, None)]), 0)
    res, peak = _peak(lambda: clean(lg, 10_000, 0))
    assert peak < LIMIT + (2 << 20), peak
    data = lg.read(0, 1 << 20).data
    batches = [bytes(data[p:p + h.size]) for p, h in iter_batches(data)]
    assert res.records_removed >= 1 and batches[0][16:] == bomb[16:]  # offset 0 gone; the bomb intact (past offset and epoch)
    assert storage.batch.parse_header(batches[0]).base_offset == 1
    lg.close()
