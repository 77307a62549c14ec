"""One log segment: ``<base_offset:020d>.log`` plus its offset and time indexes.

The ``.log`` file is nothing but whole record batches back to back (see ``storage.batch``
for the 61-byte header)::

    position 0                        p1                        p2
    +---------------------------------+-------------------------+------ ...
    | batch base=B    (hdr + payload) | batch base=B+n0 ...     | ...
    +---------------------------------+-------------------------+------ ...

Batch offsets increase: each batch's base is at least the previous batch's ``next_offset``
and the first is at least ``B`` (the segment's base offset, also its file name). As written,
batches are contiguous (first base ``B``, each next base = previous ``next_offset``); log
compaction (``storage.cleaner``) may leave gaps, inside a segment and between segments. The indexes are described
in ``storage.index``. All I/O uses ``os.pread``/``os.pwrite`` on handles obtained from the
shared :class:`~storage.handles.FileHandleCache` right before each call.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, NamedTuple

from storage.batch import HEADER_SIZE, MAGIC_KAFKA, MAGIC_NATIVE, BatchHeader, check_crc, parse_header, validate_batch
from storage.errors import CorruptBatchError
from storage.handles import FileHandleCache
from storage.index import OffsetIndex, TimeIndex

log = logging.getLogger(__name__)

__all__ = ["Segment", "Recovered", "segment_name", "LOG_SUFFIX", "INDEX_SUFFIX", "TIMEINDEX_SUFFIX"]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIMEINDEX_SUFFIX = ".timeindex"
MAX_RELATIVE_OFFSET = 0xFFFFFFFF
MAX_POSITION = 0xFFFFFFFF
_SCAN_CHUNK = 16384
_RECOVER_CHUNK = 1 << 20


class Recovered(NamedTuple):
    """What :meth:`Segment.recover` found.

    Attributes:
        kept: Byte spans ``[start, end)`` of the valid batches, in order (merged).
        lost: Offset ranges ``[start, end)`` that were in damaged bytes.
        reasons: Why each damaged stretch failed, for the log.
        file_size: Size of the ``.log`` file scanned.
        stopped: The offset the scan expected where it stopped at damage it could not step
            over (everything from there to the segment's end was dropped), None if it
            reached the end of the file.
    """

    kept: list[tuple[int, int]]
    lost: list[tuple[int, int]]
    reasons: list[str]
    file_size: int
    stopped: int | None = None

    @property
    def clean(self) -> bool:
        """Nothing to remove: every byte is a valid batch."""
        return self.kept == [(0, self.file_size)] or (not self.kept and not self.file_size)

    @property
    def tail_only(self) -> bool:
        """Only bytes after the last valid batch go (a torn tail): truncating is enough."""
        return len(self.kept) <= 1 and (not self.kept or self.kept[0][0] == 0)


class _Reader:
    """Reads a file through a window of ``_RECOVER_CHUNK`` bytes (sequential scans)."""

    def __init__(self, fd: int, file_size: int) -> None:
        self.fd = fd
        self.file_size = file_size
        self._buf = b""
        self._start = 0

    def read(self, pos: int, n: int) -> memoryview | bytes:
        off = pos - self._start
        if off < 0 or off + n > len(self._buf):
            self._buf = os.pread(self.fd, max(_RECOVER_CHUNK, n), pos)
            self._start, off = pos, 0
        return memoryview(self._buf)[off:off + n]


def _resync(seg: "Segment", reader: _Reader, pos: int, expected: int, exact: bool,
            max_offset: int | None) -> tuple[int, BatchHeader] | None:
    """After damage at ``pos``: the one place the scan may go on from, with its header; None
    if there is none.

    The only candidate is ``pos + size``, ``size`` taken from the damaged batch's own length
    field: the bytes inside a damaged batch are never searched (a record value may hold a
    whole valid batch), and the work is one header and one batch read. The candidate must be
    a whole batch with a valid CRC that chains on: in a log without gaps (``exact``) the
    damaged header must start at ``expected`` and the candidate exactly after its last
    offset; in a compacted log the candidate must start after ``expected``. Both must end by
    ``max_offset``.
    """
    head = reader.read(pos, HEADER_SIZE)
    if len(head) < HEADER_SIZE:
        return None
    damaged = parse_header(head)
    size = damaged.size
    if not HEADER_SIZE <= size <= MAX_POSITION or pos + size + HEADER_SIZE > reader.file_size:
        return None
    if exact and (damaged.base_offset != expected or damaged.last_offset_delta < 0):
        return None
    h, _ = seg._check_at(reader, pos + size, expected + 1, False, max_offset)
    if h is None or (exact and h.base_offset != expected + damaged.last_offset_delta + 1):
        return None
    return pos + size, h


def segment_name(base_offset: int) -> str:
    """File name stem of the segment starting at ``base_offset``."""
    return f"{base_offset:020d}"


class Segment:
    """A segment of a partition log. Use :meth:`create` or :meth:`open`.

    Attributes:
        base_offset: Offset of the first batch (and the file name).
        size: Bytes of valid data in the ``.log`` file.
        next_offset: Offset after the last batch (``base_offset`` when empty).
        max_timestamp: Largest batch ``max_timestamp``, -1 when empty.
        created_ms: ``now_ms`` of the first append, or of opening (for ``segment_ms``).
        last_modified_ms: ``now_ms`` of the last append, or the file mtime after opening.
    """

    def __init__(self, directory: Path, base_offset: int, handles: FileHandleCache,
                 index_interval_bytes: int, now_ms: int, index_suffix: str = "") -> None:
        stem = segment_name(base_offset)
        self.directory = directory
        self.base_offset = base_offset
        self.log_path = directory / (stem + LOG_SUFFIX)
        # index_suffix: the cleaner builds a rewritten segment's indexes under other names
        self.index = OffsetIndex(directory / (stem + INDEX_SUFFIX + index_suffix), base_offset, handles)
        self.time_index = TimeIndex(directory / (stem + TIMEINDEX_SUFFIX + index_suffix), base_offset, handles)
        self.index_interval_bytes = index_interval_bytes
        self._handles = handles
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.created_ms = now_ms
        self.last_modified_ms = now_ms
        self._bytes_since_index = 0
        self._unsynced = False
        # bytes [0, verified_upto) had their CRC checked by this process (scanned, appended
        # or read): reads do not check them again
        self.verified_upto = 0

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, directory: Path, base_offset: int, handles: FileHandleCache,
               index_interval_bytes: int, now_ms: int) -> "Segment":
        """Create a new empty segment (replacing stray files of the same name)."""
        seg = cls(directory, base_offset, handles, index_interval_bytes, now_ms)
        for p in (seg.log_path, seg.index.path, seg.time_index.path):
            handles.close(p)
            with open(p, "wb"):
                pass
        seg._unsynced = True
        return seg

    @classmethod
    def open(cls, directory: Path, base_offset: int, handles: FileHandleCache,
             index_interval_bytes: int, now_ms: int) -> "Segment":
        """Open an existing segment trusting its data (no CRC check).

        Indexes are loaded, or rebuilt from batch headers if missing or invalid; the tail after
        the last index entry is walked to find ``next_offset`` and ``max_timestamp``.

        Raises:
            CorruptBatchError: The batch framing is broken; the caller should :meth:`recover`.
        """
        seg = cls(directory, base_offset, handles, index_interval_bytes, now_ms)
        st = os.stat(seg.log_path)
        seg.size = st.st_size
        seg.last_modified_ms = st.st_mtime_ns // 1_000_000
        ok = seg.index.load(seg.size)
        if ok:
            try:
                seg._load_tail()
            except CorruptBatchError:
                ok = False
            ok = ok and seg.time_index.load(seg.next_offset - 1 - base_offset)
            if ok:
                seg.max_timestamp = max(seg.max_timestamp, seg.time_index.last_timestamp())
        if not ok:
            log.info("rebuilding indexes segment=%s", seg.log_path)
            seg._rebuild_indexes()
        return seg

    def adopt_rewritten(self, created_ms: int, last_modified_ms: int) -> None:
        """The cleaner built this object's indexes under ``.cleaned`` names while writing a
        rewritten copy of the segment; the files now carry the normal names. Use them as they
        are, without reading anything back."""
        stem = segment_name(self.base_offset)
        self.index.path = self.directory / (stem + INDEX_SUFFIX)
        self.time_index.path = self.directory / (stem + TIMEINDEX_SUFFIX)
        self.created_ms = created_ms
        self.last_modified_ms = last_modified_ms
        self._unsynced = False

    def _load_tail(self) -> None:
        """Walk from the last offset index entry to the end: next_offset, max_timestamp."""
        off, pos = self.index.last()
        exact = len(self.index) > 0  # an indexed batch starts exactly at its entry
        expected = off
        max_ts = -1
        for p, h in self.iter_headers(pos):
            if (h.base_offset != expected if exact else h.base_offset < expected) or h.last_offset_delta < 0:
                raise CorruptBatchError(
                    f"{self.log_path}: batch at position {p} has base {h.base_offset}, expected {expected}"
                )
            exact = False
            expected = h.next_offset
            max_ts = max(max_ts, h.max_timestamp)
            pos = p + h.size
        if pos != self.size:
            raise CorruptBatchError(f"{self.log_path}: incomplete batch at position {pos}")
        self.next_offset = expected
        self.max_timestamp = max_ts
        last_pos = self.index.last()[1]
        self._bytes_since_index = self.size - last_pos

    def _reset(self) -> None:
        self.index.clear()
        self.time_index.clear()
        self.size = 0
        self.next_offset = self.base_offset
        self.max_timestamp = -1
        self._bytes_since_index = 0

    def _index_batch(self, h: BatchHeader, pos: int) -> None:
        """Index bookkeeping for a batch stored at ``pos`` (shared by append and recovery)."""
        max_ts = h.max_timestamp if h.max_timestamp > self.max_timestamp else self.max_timestamp
        if self._bytes_since_index >= self.index_interval_bytes and pos > 0:
            self.index.append(h.base_offset, pos)
            self.time_index.maybe_append(max_ts, h.base_offset)
            self._bytes_since_index = 0
        size = h.size
        self._bytes_since_index += size
        self.size = pos + size
        self.next_offset = h.next_offset
        self.max_timestamp = max_ts

    def _rebuild_indexes(self) -> None:
        """Rebuild both indexes by walking headers (framing only)."""
        end = self.size
        self._reset()
        expected = self.base_offset
        for p, h in self.iter_headers(0, end):
            if h.base_offset < expected or h.last_offset_delta < 0 or p + h.size > end:
                raise CorruptBatchError(f"{self.log_path}: bad batch framing at position {p}")
            self._index_batch(h, p)
            expected = h.next_offset
        if self.size != end:
            raise CorruptBatchError(f"{self.log_path}: incomplete batch at position {self.size}")
        self.index.rewrite()
        self.time_index.rewrite()

    def recover(self, on_batch: Callable[[BatchHeader], None] | None = None, allow_gaps: bool = False,
                max_offset: int | None = None, known_gaps: dict[int, int] | None = None) -> "Recovered":
        """Validate every batch (framing, CRC, offsets); step over a damaged batch if provably
        possible.

        A batch that fails is damaged. The scan goes on only at the one position its own
        length field names, and only if a valid batch there chains on (:func:`_resync`);
        otherwise it stops and the rest of the file is dropped (``Recovered.stopped``: the
        caller decides whether that is a torn tail or lost offsets). Indexes are rebuilt in
        memory for the batches kept, at the positions they will have once the damaged bytes
        are gone: the caller must then remove them
        (:func:`storage.recovery.remove_damaged_bytes`) before anything else.

        Stored batches are checked against the framing limits only, never against the
        topic's current ``max_message_bytes`` (lowering it must not delete data).

        Args:
            on_batch: Called with the header of every valid batch, in order.
            allow_gaps: The log is compacted: a batch may start after where the previous one
                ended. When False a batch must start exactly there (``base_offset`` is not
                covered by the CRC: this is what catches a corrupted one).
            max_offset: The next segment's base offset: batches must end at or before it.
            known_gaps: Damaged ranges recorded before (start -> end): the batch after one
                starts at its end, not where the previous batch ended.

        Returns:
            The byte spans kept, the offset ranges lost, why, and where the scan stopped.
        """
        file_size = os.fstat(self._fd()).st_size
        self._reset()
        reader = _Reader(self._fd(), file_size)
        kept: list[tuple[int, int]] = []
        lost: list[tuple[int, int]] = []
        reasons: list[str] = []
        pos = 0
        expected = self.base_offset
        gaps = known_gaps or {}
        stopped = None
        while pos < file_size:
            expected = gaps.get(expected, expected)
            h, reason = self._check_at(reader, pos, expected, not allow_gaps, max_offset)
            if h is None:
                found = _resync(self, reader, pos, expected, not allow_gaps, max_offset)
                reasons.append(f"position {pos}: {reason}")
                if found is None:
                    stopped = expected
                    break
                pos, h = found
                lost.append((expected, h.base_offset))
            if kept and kept[-1][1] == pos:
                kept[-1] = (kept[-1][0], pos + h.size)
            else:
                kept.append((pos, pos + h.size))
            self._index_batch(h, self.size)
            if on_batch is not None:
                on_batch(h)
            pos += h.size
            expected = h.next_offset
        self.verified_upto = self.size
        return Recovered(kept, lost, reasons, file_size, stopped)

    def _check_at(self, reader: "_Reader", pos: int, expected: int, exact: bool,
                  max_offset: int | None) -> tuple[BatchHeader | None, str]:
        """The batch at ``pos`` if it is whole, valid and at the right offsets, else a reason."""
        head = reader.read(pos, HEADER_SIZE)
        if len(head) < HEADER_SIZE:
            return None, "torn header"
        h = parse_header(head)
        size = h.size
        if size < HEADER_SIZE or pos + size > reader.file_size:
            return None, f"bad or torn batch length {h.batch_length}"
        if (h.base_offset != expected if exact else h.base_offset < expected) or h.last_offset_delta < 0:
            return None, f"base offset {h.base_offset}, expected {expected}"
        if h.last_offset - self.base_offset > MAX_RELATIVE_OFFSET or (max_offset is not None and h.next_offset > max_offset):
            return None, f"offsets [{h.base_offset}, {h.next_offset}) outside the segment"
        try:
            validate_batch(reader.read(pos, size))
        except CorruptBatchError as exc:
            return None, str(exc)
        return h, ""

    # ------------------------------------------------------------------ I/O

    def _fd(self) -> int:
        return self._handles.get(self.log_path).fileno()

    def iter_headers(self, start: int = 0, end: int | None = None):
        """Yield ``(position, header)`` of batches from ``start`` (framing only).

        Stops at ``end`` (default: segment size) or at a torn header.

        Raises:
            CorruptBatchError: A header declares an impossible length.
        """
        end = self.size if end is None else end
        pos = start
        buf = b""
        buf_start = start
        while pos + HEADER_SIZE <= end:
            off = pos - buf_start
            if off < 0 or off + HEADER_SIZE > len(buf):
                buf = os.pread(self._fd(), min(_SCAN_CHUNK, end - pos), pos)
                buf_start, off = pos, 0
                if len(buf) < HEADER_SIZE:
                    return
            h = parse_header(buf, off)
            if h.size < HEADER_SIZE:
                raise CorruptBatchError(f"{self.log_path}: bad batch length {h.batch_length} at position {pos}")
            yield pos, h
            pos += h.size

    def append(self, batch: bytes | bytearray | memoryview, header: BatchHeader, now_ms: int) -> int:
        """Write one validated batch at the end of the segment. O(1).

        Args:
            batch: The batch bytes (offsets already assigned).
            header: Its parsed header.
            now_ms: Current time (the first append sets ``created_ms``).

        Returns:
            The byte position the batch was written at.
        """
        pos = self.size
        fd = self._fd()
        try:
            written = os.pwrite(fd, batch, pos)
            while written < len(batch):
                written += os.pwrite(fd, memoryview(batch)[written:], pos + written)
        except BaseException:
            try:
                os.ftruncate(self._fd(), pos)
            except OSError:
                pass
            raise
        if pos == 0:
            self.created_ms = now_ms
        if self.verified_upto == pos:  # the log validated it
            self.verified_upto = pos + len(batch)
        self._index_batch(header, pos)
        self.last_modified_ms = now_ms
        self._unsynced = True
        return pos

    def read(self, position: int, max_bytes: int) -> bytes:
        """Raw bytes from ``position``, at most ``max_bytes``, never past the valid end."""
        n = min(max_bytes, self.size - position)
        if n <= 0:
            return b""
        return os.pread(self._fd(), n, position)

    def read_batches(self, position: int, max_bytes: int, max_offset: int | None,
                     at_least_one: bool, exact: bool = False) -> tuple[bytes, int, int, int]:
        """Whole batches from ``position`` fitting in ``max_bytes``.

        Each batch's framing is checked, and its CRC unless its bytes were verified before
        (``verified_upto``). Cost: one ``pread`` plus a CRC-32C over unverified bytes only.

        Args:
            position: A batch start.
            max_bytes: Byte budget.
            max_offset: Exclude batches whose base offset is >= this.
            at_least_one: Return the first batch even if it exceeds ``max_bytes``.
            exact: Each batch must start where the previous one ended (no compaction).

        Returns:
            ``(data, first_base_offset, next_offset, batch_count)``; ``first`` and ``next``
            are -1 when nothing is returned.

        Raises:
            CorruptBatchError: Bad framing, CRC or offsets.
        """
        avail = self.size - position
        if avail <= 0:
            return b"", -1, -1, 0
        buf = os.pread(self._fd(), min(max(max_bytes, HEADER_SIZE), avail), position)
        pos = count = 0
        first = nxt = -1
        while len(buf) - pos >= HEADER_SIZE:
            h = parse_header(buf, pos)
            if max_offset is not None and h.base_offset >= max_offset:
                break
            size = h.size
            if (size < HEADER_SIZE or pos + size > avail or h.base_offset < nxt or h.last_offset_delta < 0
                    or h.magic not in (MAGIC_KAFKA, MAGIC_NATIVE) or (exact and nxt >= 0 and h.base_offset != nxt)):
                raise CorruptBatchError(f"{self.log_path}: bad batch at position {position + pos}: length "
                                        f"{h.batch_length}, base offset {h.base_offset}, magic {h.magic}")
            if pos + size > len(buf):
                if count == 0 and at_least_one:
                    buf = os.pread(self._fd(), size, position)
                    self._verify(buf, 0, size, h, position)
                    pos, count, first, nxt = size, 1, h.base_offset, h.next_offset
                break
            self._verify(buf, pos, size, h, position)
            if count == 0:
                first = h.base_offset
            count += 1
            nxt = h.next_offset
            pos += size
        if pos == 0:
            return b"", -1, -1, 0
        return (buf if pos == len(buf) else buf[:pos]), first, nxt, count

    def _verify(self, buf: bytes, pos: int, size: int, h: BatchHeader, position: int) -> None:
        """CRC-check the batch at ``buf[pos:pos + size]`` (file position ``position + pos``)
        unless it lies below ``verified_upto``; extend ``verified_upto`` over it."""
        at = position + pos
        if at + size <= self.verified_upto:
            return
        try:
            check_crc(memoryview(buf)[pos:pos + size], h)
        except CorruptBatchError as exc:
            raise CorruptBatchError(f"{self.log_path}: batch at position {at}: {exc}") from None
        if at <= self.verified_upto:
            self.verified_upto = at + size

    def find_position(self, offset: int) -> int:
        """Byte position of the batch containing ``offset`` (``size`` if past the end).

        Index floor lookup, then a header walk of at most about ``index_interval_bytes``.
        """
        if offset >= self.next_offset:
            return self.size
        _, pos = self.index.lookup(offset)
        for p, h in self.iter_headers(pos):
            if h.next_offset > offset:
                return p
        return self.size

    def find_timestamp(self, timestamp: int, min_offset: int = 0) -> tuple[int, BatchHeader] | None:
        """First batch with ``max_timestamp >= timestamp`` holding offsets at or after
        ``min_offset``, as ``(position, header)``."""
        if self.max_timestamp < timestamp:
            return None
        _, pos = self.index.lookup(max(self.time_index.lookup(timestamp), min_offset))
        for p, h in self.iter_headers(pos):
            if h.max_timestamp >= timestamp and h.next_offset > min_offset:
                return p, h
        return None

    def truncate_to(self, offset: int) -> int:
        """Remove the batch containing ``offset`` and everything after it.

        Returns:
            Number of bytes removed.
        """
        pos = self.find_position(offset)
        if pos >= self.size:
            return 0
        removed = self.size - pos
        new_next = parse_header(os.pread(self._fd(), HEADER_SIZE, pos)).base_offset
        os.ftruncate(self._fd(), pos)
        self.verified_upto = min(self.verified_upto, pos)
        self.index.truncate_to(new_next)
        self.time_index.truncate_to(new_next)
        self.size = pos
        self._load_tail()
        self.max_timestamp = max(self.max_timestamp, self.time_index.last_timestamp())
        self._unsynced = True
        return removed

    def flush(self) -> None:
        """Write pending index entries and fsync the log and index files."""
        self.index.flush_to_file()
        self.time_index.flush_to_file()
        if self._unsynced:
            os.fsync(self._fd())
            self.index.fsync()
            self.time_index.fsync()
            self._unsynced = False

    def close(self) -> None:
        """Write pending index entries and release all handles (no fsync)."""
        self.index.close()
        self.time_index.close()
        self._handles.close(self.log_path)

    def delete(self) -> None:
        """Release handles and remove the three files."""
        self.index.delete()
        self.time_index.delete()
        self._handles.close(self.log_path)
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return (f"Segment(base={self.base_offset}, next={self.next_offset}, size={self.size}, "
                f"max_ts={self.max_timestamp})")
