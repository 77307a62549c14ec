"""Payload compression codecs of record batches (attribute bits 0-2), shared by both magics.

======  ======  ==================================================================
id      name    bytes of a compressed payload
======  ======  ==================================================================
0       none    the records as they are
1       gzip    one gzip member (RFC 1952); readers accept several members, at most
                ``MAX_GZIP_MEMBERS`` (1,000) -- a payload of many empty members is work
                without output
2       snappy  xerial framing (below) when it starts with the xerial magic,
                otherwise one raw snappy block; written as xerial framing
3       lz4     one LZ4 *frame* (not a bare LZ4 block); Kafka readers need
                independent blocks (FLG bit 5 set)
4       zstd    one zstd frame; readers must cope without a content size
======  ======  ==================================================================

Snappy's xerial framing (what the Java client writes, and what every Kafka client reads)::

    82 53 4E 41 50 50 59 00   magic "\\x82SNAPPY\\x00"
    00 00 00 01               version (i32 BE)
    00 00 00 01               minimum compatible version (i32 BE)
    then repeated: length i32 BE, one raw snappy block of that many bytes

Every block decompresses on its own; the payload is the concatenation. We write blocks of at
most 32 KiB uncompressed, as snappy-java does.

Bounded decompression: ``decompress(codec, data, max_size)`` never produces, nor allocates for,
more than ``max_size`` output bytes (a few bytes of zstd can claim gigabytes). Each codec stops
at the bound on its own terms: zstd and lz4 check a declared content size first and otherwise
decompress into an output buffer of at most ``max_size + 1`` bytes; gzip inflates with
``max_length``; snappy checks the varint length every raw block declares (each xerial block
too) before decompressing it. Over the bound: :class:`DecompressionLimitError`.

Pure functions over bytes; errors in a payload raise :class:`CorruptBatchError`.
"""

from __future__ import annotations

import struct
import threading
import zlib

import cramjam
import lz4.frame
import zstandard

from storage.errors import CorruptBatchError

__all__ = [
    "COMPRESSION_NONE", "COMPRESSION_GZIP", "COMPRESSION_SNAPPY", "COMPRESSION_LZ4",
    "COMPRESSION_ZSTD", "COMPRESSION_MASK", "COMPRESSION_BY_NAME", "compress", "decompress",
    "DecompressionLimitError",
]

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4
COMPRESSION_MASK = 0x07

COMPRESSION_BY_NAME = {
    None: COMPRESSION_NONE, "none": COMPRESSION_NONE, "gzip": COMPRESSION_GZIP,
    "snappy": COMPRESSION_SNAPPY, "lz4": COMPRESSION_LZ4, "zstd": COMPRESSION_ZSTD,
}

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024
_I32 = struct.Struct(">i")
MAX_GZIP_MEMBERS = 1000
"""Most gzip members one payload may hold (clients write one; many tiny members are work
without output)."""
_GZIP_PIECE = 64 * 1024



class DecompressionLimitError(CorruptBatchError):
    """A payload decompresses to more than the reader's bound (``limit`` bytes)."""

    def __init__(self, message: str, limit: int, offset: int | None = None) -> None:
        super().__init__(message, offset)
        self.limit = limit


def _over(codec: int, limit: int, size: int | None = None) -> DecompressionLimitError:
    what = f"{size} bytes" if size is not None else "more"
    return DecompressionLimitError(
        f"payload (codec {codec}) decompresses to {what}, over the limit of {limit} bytes", limit)


# zstandard's (de)compressor objects are not safe for concurrent use: one per thread.
_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "zc", None)
    if c is None:
        c = _local.zc = zstandard.ZstdCompressor(level=3)
    return c


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # gzip container, mtime 0: deterministic
    return c.compress(data) + c.flush()


def _snappy_xerial(data: bytes) -> bytes:
    out = [_XERIAL_HEADER]
    for i in range(0, len(data), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(data[i : i + _XERIAL_BLOCK]))
        out += (_I32.pack(len(block)), block)
    return b"".join(out)


def _snappy_length(block: bytes) -> int:
    """The uncompressed length a raw snappy block declares (its leading unsigned varint)."""
    result = shift = 0
    for i in range(min(len(block), 5)):
        b = block[i]
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result
        shift += 7
    raise CorruptBatchError("bad snappy block: no uncompressed length")


def _unsnappy(data: bytes, limit: int | None) -> bytes:
    if not data.startswith(XERIAL_MAGIC):
        if limit is not None and (size := _snappy_length(data)) > limit:
            raise _over(COMPRESSION_SNAPPY, limit, size)
        return bytes(cramjam.snappy.decompress_raw(data))
    if len(data) < len(_XERIAL_HEADER):
        raise CorruptBatchError("truncated xerial snappy header")
    out = []
    total = 0
    pos, n = len(_XERIAL_HEADER), len(data)
    while pos < n:
        if n - pos < 4:
            raise CorruptBatchError(f"truncated xerial snappy block length at byte {pos}")
        size = _I32.unpack_from(data, pos)[0]
        pos += 4
        if size < 0 or pos + size > n:
            raise CorruptBatchError(f"xerial snappy block of {size} bytes at byte {pos} overruns {n}")
        if limit is not None:
            total += _snappy_length(data[pos : pos + size])
            if total > limit:
                raise _over(COMPRESSION_SNAPPY, limit, total)
        out.append(bytes(cramjam.snappy.decompress_raw(data[pos : pos + size])))
        pos += size
    return b"".join(out)


def compress(codec: int, data: bytes, *, lz4_linked_blocks: bool = False) -> bytes:
    """Compress one batch payload.

    Args:
        codec: A ``COMPRESSION_*`` id.
        data: The uncompressed records.
        lz4_linked_blocks: Write an LZ4 frame with linked blocks (python-lz4's default, which
            native producers have always written; a frame of one block, up to 64 KiB, is
            marked independent either way). Kafka readers refuse linked blocks, so the
            default is independent blocks.

    Returns:
        The payload as stored (``data`` itself for ``COMPRESSION_NONE``).

    Raises:
        ValueError: ``codec`` is not one of ids 0..4.

    Runtime: O(len(data)).
    """
    if codec == COMPRESSION_NONE:
        return data
    if codec == COMPRESSION_ZSTD:
        return _zstd_compressor().compress(data)
    if codec == COMPRESSION_LZ4:
        return lz4.frame.compress(data, block_linked=lz4_linked_blocks)
    if codec == COMPRESSION_GZIP:
        return _gzip(data)
    if codec == COMPRESSION_SNAPPY:
        return _snappy_xerial(data)
    raise ValueError(f"unknown compression codec {codec}")


def _unzstd(data: bytes, limit: int | None) -> bytes:
    if limit is None:
        # decompressobj copes with frames that do not record their content size.
        dobj = _zstd_decompressor().decompressobj()
        out = dobj.decompress(data)
        if not dobj.eof:
            raise CorruptBatchError("cannot decompress payload (codec 4): truncated zstd frame")
        return out
    size = zstandard.get_frame_parameters(data).content_size
    if size != zstandard.CONTENTSIZE_UNKNOWN and size > limit:
        raise _over(COMPRESSION_ZSTD, limit, size)
    # One-shot into a buffer of the declared size, else of ``limit`` bytes: zstd stops
    # rather than write past it, and refuses a truncated frame.
    try:
        return _zstd_decompressor().decompress(data, max_output_size=limit)
    except zstandard.ZstdError:
        # A full buffer and a truncated frame fail alike: tell them apart (bounded read).
        if size == zstandard.CONTENTSIZE_UNKNOWN and len(
                _zstd_decompressor().stream_reader(data).read(limit + 1)) > limit:
            raise _over(COMPRESSION_ZSTD, limit) from None
        raise


def _unlz4(data: bytes, limit: int | None) -> bytes:
    if limit is None:
        return lz4.frame.decompress(data)
    size = lz4.frame.get_frame_info(data).get("content_size") or 0
    if size > limit:
        raise _over(COMPRESSION_LZ4, limit, size)
    d = lz4.frame.LZ4FrameDecompressor()
    cap = size or limit
    out = d.decompress(data, max_length=cap + 1)
    if len(out) > cap or (not d.eof and not d.needs_input):
        if size:
            raise CorruptBatchError(f"lz4 frame decompresses past its declared content size {size}")
        raise _over(COMPRESSION_LZ4, limit)
    if not d.eof:
        raise CorruptBatchError("cannot decompress payload (codec 3): truncated lz4 frame")
    return out


def _gunzip(data: bytes, limit: int | None) -> bytes:
    """Member after member (no zero padding between them), in linear time: input goes in by
    pieces of ``_GZIP_PIECE`` bytes (zlib copies what follows a member's end into
    ``unused_data``; whole-tail copies would make many tiny members quadratic)."""
    out: list[bytes] = []
    total = pos = members = 0
    view, n = memoryview(data), len(data)
    while pos < n:
        members += 1
        if members > MAX_GZIP_MEMBERS:
            raise CorruptBatchError(f"gzip payload has more than MAX_GZIP_MEMBERS = {MAX_GZIP_MEMBERS} "
                                    f"members (the next starts at byte {pos} of {n})")
        d = zlib.decompressobj(31)
        while not d.eof:
            if pos >= n:
                raise CorruptBatchError("cannot decompress payload (codec 1): truncated gzip member")
            piece = view[pos : pos + _GZIP_PIECE]
            chunk = d.decompress(piece, 0 if limit is None else limit + 1 - total)
            total += len(chunk)
            if limit is not None and (total > limit or d.unconsumed_tail):
                raise _over(COMPRESSION_GZIP, limit)
            out.append(chunk)
            pos += len(piece) - len(d.unused_data)
    return b"".join(out)


def decompress(codec: int, data: bytes | memoryview, max_size: int | None = None) -> bytes:
    """Decompress one batch payload written by any Kafka client or zbroker producer.

    Args:
        codec: The batch's ``attributes & COMPRESSION_MASK``.
        data: The stored payload.
        max_size: If given, the most output bytes to produce: decompression stops there,
            without allocating more than about ``max_size`` bytes first.

    Returns:
        The uncompressed records.

    Raises:
        DecompressionLimitError: The payload decompresses (or declares that it does) to
            more than ``max_size`` bytes.
        CorruptBatchError: Unknown codec id, or a payload the codec cannot decode
            (the codec library's message is included).

    Runtime: O(output size), output at most ``max_size``.
    """
    if codec == COMPRESSION_NONE:
        return bytes(data)
    data = bytes(data)
    try:
        if codec == COMPRESSION_ZSTD:
            return _unzstd(data, max_size)
        if codec == COMPRESSION_LZ4:
            return _unlz4(data, max_size)
        if codec == COMPRESSION_GZIP:
            return _gunzip(data, max_size)
        if codec == COMPRESSION_SNAPPY:
            return _unsnappy(data, max_size)
    except CorruptBatchError:
        raise
    except Exception as exc:  # codec libraries raise assorted types
        raise CorruptBatchError(f"cannot decompress payload (codec {codec}): {exc}") from exc
    raise CorruptBatchError(f"unknown compression codec {codec}")
