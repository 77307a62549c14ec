"""Bounded decompression: every codec stops at ``max_size`` without allocating the whole output.

A decompression bomb is a few bytes (or kilobytes) of payload that expand to a hundred
megabytes of zeros; ``tracemalloc`` shows the reader's peak memory stays near the bound.
"""

from __future__ import annotations

import tracemalloc

import cramjam
import lz4.frame
import pytest
import zstandard

from storage.batch import (
    COMPRESSION_GZIP, COMPRESSION_LZ4, COMPRESSION_SNAPPY, COMPRESSION_ZSTD, build_kafka_batch,
    build_native_batch,
)
from storage.decode import decode_batches, decode_some_batches
from storage.compression import DecompressionLimitError, compress, decompress
from storage.errors import CorruptBatchError

BOMB = 100 * 1024 * 1024  # what the bombs expand to
LIMIT = 1 << 20

# (name, codec id, compress function): each framing a reader meets, with and without a
# declared content size where the format has one
FRAMINGS = [
    ("gzip", COMPRESSION_GZIP, lambda d: compress(COMPRESSION_GZIP, d)),
    ("snappy-xerial", COMPRESSION_SNAPPY, lambda d: compress(COMPRESSION_SNAPPY, d)),
    ("snappy-raw", COMPRESSION_SNAPPY, lambda d: bytes(cramjam.snappy.compress_raw(d))),
    ("lz4-sized", COMPRESSION_LZ4, lambda d: lz4.frame.compress(d, store_size=True)),
    ("lz4-unsized", COMPRESSION_LZ4, lambda d: lz4.frame.compress(d, store_size=False)),
    ("zstd-sized", COMPRESSION_ZSTD, lambda d: zstandard.ZstdCompressor().compress(d)),
    ("zstd-unsized", COMPRESSION_ZSTD,
     lambda d: zstandard.ZstdCompressor(write_content_size=False).compress(d)),
]
IDS = [f[0] for f in FRAMINGS]


@pytest.fixture(scope="module")
def zeros():
    return bytes(BOMB)


def _peak(fn):
    """Run ``fn`` under tracemalloc; return (its exception or None, peak bytes allocated)."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the caller checks which
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


@pytest.mark.parametrize("name, codec, pack", FRAMINGS, ids=IDS)
def test_a_bomb_stops_at_the_bound_with_memory_near_the_bound(zeros, name, codec, pack):
    bomb = pack(zeros)
    assert len(bomb) < BOMB // 20
    exc, peak = _peak(lambda: decompress(codec, bomb, LIMIT))
    assert isinstance(exc, DecompressionLimitError) and exc.limit == LIMIT, exc
    assert f"over the limit of {LIMIT} bytes" in str(exc)
    # the payload copy plus at most a few bound-sized buffers, never the 100 MiB
    assert peak < len(bomb) + 4 * LIMIT, (name, peak)


@pytest.mark.parametrize("name, codec, pack", FRAMINGS, ids=IDS)
def test_data_up_to_the_bound_decompresses(name, codec, pack):
    data = b"x" * 1000 + bytes(LIMIT - 1000)
    assert decompress(codec, pack(data), LIMIT) == data
    assert decompress(codec, pack(data)) == data  # no bound: as before
    with pytest.raises(DecompressionLimitError):
        decompress(codec, pack(data), LIMIT - 1)


@pytest.mark.parametrize("name, codec, pack", [f for f in FRAMINGS if f[0] in ("gzip", "lz4-unsized", "zstd-unsized")],
                         ids=["gzip", "lz4", "zstd"])
def test_a_truncated_payload_is_corrupt_not_over_the_bound(name, codec, pack):
    whole = pack(b"abc" * 100_000)
    with pytest.raises(CorruptBatchError) as info:
        decompress(codec, whole[:-7], LIMIT)
    assert not isinstance(info.value, DecompressionLimitError)


@pytest.mark.parametrize("codec", [COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD])
@pytest.mark.parametrize("build", [build_native_batch, build_kafka_batch])
def test_a_bomb_batch_names_topic_partition_and_offset(build, codec):
    good = build([(1000, None, b"ok", None)], base_offset=40)
    bomb = build([(1000, None, bytes(32 * LIMIT), None)], base_offset=41, compression=codec)
    assert len(bomb) < 2 * LIMIT
    buf = good + bomb
    with pytest.raises(DecompressionLimitError, match=r"t-3: batch at offset 41: .*over the limit") as info:
        decode_batches(buf, "t", 3, max_batch_bytes=LIMIT)
    assert info.value.offset == 41
    exc, peak = _peak(lambda: decode_some_batches(buf, "t", 3, 0, True, tuple, LIMIT))
    assert exc is None and peak < len(buf) + 4 * LIMIT
    recs, end, err = decode_some_batches(buf, "t", 3, 0, True, tuple, LIMIT)
    assert [r[2] for r in recs] == [40] and end == len(good)
    assert isinstance(err, DecompressionLimitError) and err.offset == 41


def test_many_gzip_members_stop_at_the_member_cap():
    """50,000 empty members (1 MB) once took a quadratic second; past the cap is an error."""
    from storage.compression import MAX_GZIP_MEMBERS
    empty = compress(COMPRESSION_GZIP, b"")
    for bound in (LIMIT, None):
        with pytest.raises(CorruptBatchError, match=f"more than MAX_GZIP_MEMBERS = {MAX_GZIP_MEMBERS} members") as info:
            decompress(COMPRESSION_GZIP, empty * 50_000, bound)
        assert not isinstance(info.value, DecompressionLimitError)
    one = compress(COMPRESSION_GZIP, b"x")
    assert decompress(COMPRESSION_GZIP, one * MAX_GZIP_MEMBERS, LIMIT) == b"x" * MAX_GZIP_MEMBERS
    assert decompress(COMPRESSION_GZIP, one * MAX_GZIP_MEMBERS) == b"x" * MAX_GZIP_MEMBERS


def test_gzip_members_are_read_in_pieces_not_whole_tails(monkeypatch):
    """zlib copies what follows a member into unused_data: it must never be the whole tail."""
    import storage.compression as compression
    seen = []
    real = compression.zlib.decompressobj

    class Spy:
        def __init__(self, wbits):
            self._d = real(wbits)

        def decompress(self, data, max_length=0):
            out = self._d.decompress(data, max_length)
            seen.append(len(self._d.unused_data))
            return out

        def __getattr__(self, name):
            return getattr(self._d, name)

    monkeypatch.setattr(compression.zlib, "decompressobj", Spy)
    payload = compress(COMPRESSION_GZIP, b"y") * 900 + compress(COMPRESSION_GZIP, bytes(300_000))
    assert decompress(COMPRESSION_GZIP, payload, LIMIT) == b"y" * 900 + bytes(300_000)
    assert max(seen) <= compression._GZIP_PIECE
