"""The partition log: an ordered run of segments with offsets assigned on append.

Partition directory ``<data_dir>/<topic>-<partition>/``::

    00000000000000000000.log        batches with offsets [0, 1200)
    00000000000000000000.index      sparse offset -> position
    00000000000000000000.timeindex  sparse max timestamp -> offset
    00000000000000001200.log        the active segment (appends go here)
    00000000000000001200.index
    00000000000000001200.timeindex
    leader-epoch-checkpoint         epoch -> start offset (storage.leader_epoch)
    log-start-offset                a log start inside a segment (storage.log_start)

Invariants (checked by :meth:`Log._check`): segments are ordered and do not overlap (each
segment's ``next_offset`` is at most the next segment's base offset; they are equal unless log
compaction removed the records in between, see ``storage.cleaner``), only the first segment
may be an empty closed one (compaction keeps it to hold the log start), the log start offset is
at or above the first segment's base (above it after records were deleted, Kafka's DeleteRecords)
and at most the log end offset (LEO), the LEO is the last segment's ``next_offset``, and only the
last (active) segment is appended to.

Theory of operation: ``append`` validates a batch (framing, CRC, count; never records),
stamps ``base_offset = LEO`` and the leader epoch into its header, rolls the active segment if
needed, and writes it with one ``pwrite``. ``read`` locates the batch containing an offset via
the sparse index plus a short header walk, then returns whole stored batches with one
``pread`` per segment. ``fsync`` happens per the flush policy; ``recovery_point`` is the
offset up to which data is known to be durable. On open, segments at or after the recovery
point are CRC-checked; damaged bytes cost only the offsets they held (``storage.recovery``),
which are recorded (``storage.damage``) and answered with :class:`DamagedRangeError`.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sortedcontainers import SortedDict

from storage.batch import BatchHeader, patch_batch, validate_batch
from storage.checkpoint import fsync_dir
from storage.damage import FILE_NAME as DAMAGE_FILE, DamagedRanges
from storage.errors import CheckpointError, CorruptBatchError, DamagedRangeError, OffsetMismatch, OffsetOutOfRange
from storage.handles import FileHandleCache
from storage.invariants import check_log
from storage.leader_epoch import FILE_NAME as EPOCH_FILE, LeaderEpochCache
from storage.log_start import FILE_NAME as START_FILE, LogStartOffset
from storage.segment import MAX_POSITION, MAX_RELATIVE_OFFSET, Segment
from storage.recovery import load_segments, repair_for_read, scan_directory, skip_damaged
from storage.timestamps import offset_for_timestamp

log = logging.getLogger(__name__)

__all__ = ["Log", "LogConfig", "AppendInfo", "ReadResult", "OffsetOutOfRange", "OffsetMismatch", "PARTITION_METADATA_FILE"]

#: Written by the owner of the log (the broker: which topic incarnation it belongs to); kept as is.
PARTITION_METADATA_FILE = "partition.metadata"

GAPS_FILE = "offset-gaps"  # present: the log is or was compacted (see Log.config)
_KNOWN_FILES = (EPOCH_FILE, PARTITION_METADATA_FILE, DAMAGE_FILE, GAPS_FILE, START_FILE)  # besides segments: kept as they are


@dataclass(frozen=True)
class LogConfig:
    """Per-log settings.

    Attributes:
        segment_bytes: Roll when the active segment would exceed this size.
        segment_ms: Roll a non-empty active segment older than this.
        index_interval_bytes: Bytes of data between sparse index entries.
        flush_messages: fsync after this many records (0 = off).
        flush_ms: fsync when the last flush is this old (0 = off); see :meth:`Log.maybe_flush`.
        fsync: ``"always"`` fsyncs after every append; ``"never"`` only per the two above
            and on close.
        max_message_bytes: Largest accepted batch, in bytes.
        allow_offset_gaps: The log is compacted (here or on the leader it copies): replica
            appends may start past the log end and recovery accepts gaps in the active
            segment too.  Off, any gap is corruption.
    """

    segment_bytes: int = 1073741824
    segment_ms: int = 604800000
    index_interval_bytes: int = 4096
    flush_messages: int = 0
    flush_ms: int = 0
    fsync: str = "never"
    max_message_bytes: int = 1048588
    allow_offset_gaps: bool = False

    def __post_init__(self) -> None:
        if self.fsync not in ("always", "never"):
            raise ValueError(f"fsync must be 'always' or 'never', got {self.fsync!r}")
        for name in ("segment_bytes", "segment_ms", "max_message_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("index_interval_bytes", "flush_messages", "flush_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


class AppendInfo(NamedTuple):
    """Result of :meth:`Log.append`."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    record_count: int
    size: int


class ReadResult(NamedTuple):
    """Result of :meth:`Log.read`: whole stored batches, concatenated."""

    data: bytes
    first_offset: int
    next_offset: int
    batch_count: int


class _SegmentDamaged(Exception):
    """Internal: a read found damage in ``segment`` (the cause says what)."""

    def __init__(self, segment: Segment) -> None:
        super().__init__(segment.log_path.name)
        self.segment = segment


class Log:
    """A partition's commit log.

    Args:
        directory: The partition directory (created if missing).
        config: Settings.
        now_ms: Current time; starts the ``segment_ms`` clock of a reopened active segment.
        handles: Shared file handle cache; a private one is made if None.
        recovery_point: Offset up to which data was fsynced (from the broker's
            checkpoint). Segments holding data at or beyond it are CRC-checked; None
            checks every segment.
    """

    def __init__(self, directory: str | os.PathLike, config: LogConfig, now_ms: int,
                 handles: FileHandleCache | None = None, recovery_point: int | None = None) -> None:
        self.directory = Path(directory)
        self._own_handles = handles is None
        self.handles = handles if handles is not None else FileHandleCache(64)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._gaps_marker = self.directory / GAPS_FILE
        self._has_gaps = self._gaps_marker.exists()
        self.config = config
        self._segments: SortedDict = SortedDict()
        self._closed = False
        self.truncations = 0  # bumped by every truncation that removes data (the cleaner watches it)
        bases = scan_directory(self.directory, self.handles, _KNOWN_FILES)
        self._start = LogStartOffset(self.directory / START_FILE)
        try:
            self.leader_epoch_cache = LeaderEpochCache(self.directory / EPOCH_FILE, lambda: self._leo)
            rebuild_epochs = False
        except CheckpointError as exc:
            log.warning("discarding malformed leader epoch checkpoint: %s", exc)
            os.unlink(self.directory / EPOCH_FILE)
            self.leader_epoch_cache = LeaderEpochCache(self.directory / EPOCH_FILE, lambda: self._leo)
            rebuild_epochs = True
        trust = True
        try:
            self.damaged = DamagedRanges(self.directory / DAMAGE_FILE)
        except CheckpointError as exc:  # the ranges are unknown: scan every segment for gaps
            log.error("malformed damaged-offsets file, scanning every segment: %s", exc)
            os.unlink(self.directory / DAMAGE_FILE)
            self.damaged = DamagedRanges(self.directory / DAMAGE_FILE)
            trust = False
        load_segments(self, bases, now_ms, recovery_point, trust)
        if not self._segments:
            self._segments[0] = Segment.create(self.directory, 0, self.handles,
                                               config.index_interval_bytes, now_ms)
        self._active: Segment = self._segments.peekitem(-1)[1]
        self._leo = self._active.next_offset
        if rebuild_epochs or (self.leader_epoch_cache.latest_epoch is None and self._leo > self.log_start_offset):
            self._rebuild_epoch_cache()
        self.leader_epoch_cache.truncate_from_start(self.log_start_offset)  # batches below the start were scanned too
        self.leader_epoch_cache.truncate_from_end(self._leo)
        self.damaged.truncate_from(self._leo)
        self.damaged.truncate_before(self.log_start_offset)
        rp = self.log_start_offset if recovery_point is None else recovery_point
        self.recovery_point = min(max(rp, self.log_start_offset), self._leo)
        self._unflushed_messages = 0
        self._last_flush_ms = now_ms
        self._new_files = False
        if self._start.offset > self._leo:  # deleted up to a log end that was not durable: go on from there
            log.warning("log start %d is past the recovered log end %d dir=%s: the log restarts empty there",
                        self._start.offset, self._leo, self.directory)
            self.truncate_fully_and_start_at(self._start.offset)
        elif self._start.offset > self._segments.keys()[0]:  # a crash may have come before they were deleted
            self.delete_segments_before(self._start.offset)

    @property
    def config(self) -> LogConfig:
        return self._config

    @config.setter
    def config(self, config: LogConfig) -> None:
        """A compacted log keeps its offset gaps after its policy changes: the first time the
        config allows gaps, a marker file (``offset-gaps``) records it durably."""
        if config.allow_offset_gaps and not self._has_gaps:
            self._gaps_marker.touch()
            fsync_dir(self.directory)
            self._has_gaps = True
        self._config = config

    @property
    def allows_gaps(self) -> bool:
        """Offsets may have gaps here (the log is or was ever compacted): recovery and reads
        do not require base offsets to chain exactly."""
        return self._has_gaps

    # ------------------------------------------------------------------ loading

    def _note_epoch(self, header) -> None:
        latest = self.leader_epoch_cache.latest_epoch
        if header.leader_epoch >= 0 and (latest is None or header.leader_epoch > latest):
            self.leader_epoch_cache.assign(header.leader_epoch, header.base_offset)

    def _rebuild_epoch_cache(self) -> None:
        log.info("rebuilding leader epoch cache dir=%s", self.directory)
        self.leader_epoch_cache.clear()
        for seg in self._segments.values():
            for _, h in seg.iter_headers(0):
                self._note_epoch(h)

    # ------------------------------------------------------------------ properties

    @property
    def log_start_offset(self) -> int:
        """First offset served: the first segment's base offset, or above it after
        :meth:`delete_records_before`. O(1)."""
        return max(self._start.offset, self._segments.peekitem(0)[0])

    @property
    def log_end_offset(self) -> int:
        """Offset the next appended record will get (LEO)."""
        return self._leo

    @property
    def active_segment(self) -> Segment:
        """The segment appends go to."""
        return self._active

    def segments(self) -> list[Segment]:
        """The segments, oldest first."""
        return list(self._segments.values())

    # ------------------------------------------------------------------ writes

    def append(self, batch: bytes | bytearray | memoryview, now_ms: int, leader_epoch: int = 0,
               assign_offsets: bool = True, header: BatchHeader | None = None) -> AppendInfo:
        """Validate and append one batch. O(1): no per-record work.

        Args:
            batch: One whole record batch.
            now_ms: Current time (rolling and flush policy).
            leader_epoch: Stamped into the batch when ``assign_offsets`` is True.
            assign_offsets: True for leader appends (the batch gets ``base_offset = LEO``);
                False for replica appends (the batch must already start at LEO and keeps its
                leader epoch).
            header: What :func:`storage.batch.validate_produced_batch` returned for this very
                batch (the produce path checks it before its duplicate check); the log then
                does not check it again. None: the log validates it (:func:`validate_batch`).

        Returns:
            Where the batch landed.

        Raises:
            CorruptBatchError: Bad framing, CRC, count, size or an empty offset range.
            OffsetMismatch: Replica append whose base offset is not the LEO.
        """
        h = header or validate_batch(batch, self.config.max_message_bytes)
        if h.last_offset_delta < 0:
            raise CorruptBatchError(f"empty batch: last_offset_delta {h.last_offset_delta}")
        leo = self._leo
        if assign_offsets:
            batch = bytearray(batch)
            patch_batch(batch, leo, leader_epoch)
            h = h._replace(base_offset=leo, leader_epoch=leader_epoch)
        elif h.base_offset != leo and not (self.config.allow_offset_gaps and h.base_offset > leo):
            raise OffsetMismatch(f"batch base offset {h.base_offset} != log end offset {leo}")
        seg = self._active
        n = h.batch_length + 12
        if seg.size and (seg.size + n > self.config.segment_bytes
                         or now_ms - seg.created_ms >= self.config.segment_ms
                         or h.last_offset - seg.base_offset > MAX_RELATIVE_OFFSET
                         or seg.size + n > MAX_POSITION):
            self.roll(now_ms)
            seg = self._active
        seg.append(batch, h, now_ms)
        self._leo = h.next_offset
        epoch = h.leader_epoch
        if epoch >= 0:
            latest = self.leader_epoch_cache.latest_epoch
            if latest is None or epoch > latest:
                self.leader_epoch_cache.assign(epoch, h.base_offset)
        self._unflushed_messages += h.record_count
        cfg = self.config
        if (cfg.fsync == "always"
                or (cfg.flush_messages and self._unflushed_messages >= cfg.flush_messages)
                or (cfg.flush_ms and now_ms - self._last_flush_ms >= cfg.flush_ms)):
            self.flush(now_ms)
        return AppendInfo(h.base_offset, h.last_offset, h.max_timestamp, h.record_count, n)

    def roll(self, now_ms: int) -> None:
        """Start a new active segment at the LEO (no-op if the active one is empty)."""
        old = self._active
        if old.size == 0:
            return
        old.index.flush_to_file()
        old.time_index.flush_to_file()
        seg = Segment.create(self.directory, self._leo, self.handles, self.config.index_interval_bytes, now_ms)
        self._segments[seg.base_offset] = seg
        self._active = seg
        self._new_files = True
        log.info("rolled segment dir=%s base=%s previous_size=%s", self.directory, seg.base_offset, old.size)

    def flush(self, now_ms: int | None = None) -> None:
        """fsync every segment holding data beyond the recovery point; advance it to the LEO."""
        for seg in self._segments.values():
            if seg.next_offset > self.recovery_point or seg is self._active:
                seg.flush()
        if self._new_files:
            fsync_dir(self.directory)
            self._new_files = False
        self.recovery_point = self._leo
        self._unflushed_messages = 0
        if now_ms is not None:
            self._last_flush_ms = now_ms

    def maybe_flush(self, now_ms: int) -> bool:
        """Apply the ``flush_ms`` policy; the broker calls this periodically.

        Returns:
            True if a flush happened.
        """
        if (self.config.flush_ms and self._leo > self.recovery_point
                and now_ms - self._last_flush_ms >= self.config.flush_ms):
            self.flush(now_ms)
            return True
        return False

    def truncate_to(self, offset: int) -> None:
        """Remove everything at and after ``offset`` (replica truncation, KIP-101).

        Truncation is at batch granularity: the batch containing ``offset`` is removed
        whole, so the new LEO is ``offset`` when it is a batch boundary (as epoch end offsets
        are) and that batch's base offset otherwise. At or past the LEO the records stay, but
        leader epochs starting at or after ``offset`` are still forgotten (a leader records its
        epoch when elected, before writing anything: a follower truncating to where that epoch
        began must lose it, or it would keep naming an epoch its new leader does not know). An
        offset below the log start offset empties the log and restarts it at ``offset``; so
        does one inside the batch holding the log start, at the log start.
        """
        if offset >= self._leo:
            self.leader_epoch_cache.truncate_from_end(offset)
            return
        if offset <= self.log_start_offset:
            self.truncate_fully_and_start_at(offset)
            return
        self.truncations += 1
        for base in reversed(list(self._segments.irange(minimum=offset))):
            self._segments.pop(base).delete()
        seg = self._segments.peekitem(-1)[1]
        seg.truncate_to(offset)
        self._active = seg
        self._leo = seg.next_offset
        self.recovery_point = min(self.recovery_point, self._leo)
        self.leader_epoch_cache.truncate_from_end(self._leo)
        self.damaged.truncate_from(self._leo)
        log.info("truncated dir=%s requested=%s log_end_offset=%s", self.directory, offset, self._leo)
        if self._leo < self.log_start_offset:  # the batch holding the start went
            self.truncate_fully_and_start_at(self.log_start_offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete all data; the log restarts empty with start offset = LEO = ``offset``."""
        self.truncations += 1
        for base in reversed(self._segments.keys()):
            self._segments.pop(base).delete()
        seg = Segment.create(self.directory, offset, self.handles, self.config.index_interval_bytes,
                             self._active.created_ms)
        self._segments[offset] = seg
        self._active = seg
        self._leo = offset
        self.recovery_point = offset
        self._new_files = True
        self._start.reset(offset)
        self.leader_epoch_cache.clear()
        self.damaged.truncate_from(offset)
        self.damaged.truncate_before(offset)
        log.info("truncated fully dir=%s start_offset=%s", self.directory, offset)

    def skip_damaged(self, end: int) -> None:
        """Replica side: the leader lost ``[LEO, end)`` to damage too. Record the range and
        let the next replica append start at ``end`` (a new segment there)."""
        skip_damaged(self, end)

    def delete_segments_before(self, offset: int) -> int:
        """Delete closed segments lying entirely below ``offset``; never the active one.

        The log start offset becomes the first remaining segment's base offset (or stays
        above it, where :meth:`delete_records_before` put it).

        Returns:
            Number of segments deleted.
        """
        count = 0
        while len(self._segments) > 1:
            base, seg = self._segments.peekitem(0)
            if seg.next_offset > offset:
                break
            self._segments.pop(base)
            seg.delete()
            count += 1
        if count:
            self._start_moved()
            log.info("deleted segments dir=%s count=%s log_start_offset=%s", self.directory, count, self.log_start_offset)
        return count

    def delete_records_before(self, offset: int) -> int:
        """Make ``offset`` the log start (Kafka's DeleteRecords): offsets below it are gone.

        The start may land inside a segment (and inside a batch: a read at the start returns
        that whole batch, as in Kafka; readers skip records below their position). It never
        moves back: an ``offset`` at or below the log start changes nothing. It is written
        durably (``storage.log_start``) before anything else changes, then the segments
        lying wholly below it are deleted (never the active one). With offset gaps
        (compaction) the new start may be above ``offset``: the first offset held after it.
        Cost: one small atomic file write, plus the unlinks of the deleted segments.

        Returns:
            The new log start offset.

        Raises:
            OffsetOutOfRange: ``offset`` is past the log end.
        """
        if offset > self._leo:
            raise OffsetOutOfRange(offset, self.log_start_offset, self._leo)
        if offset <= self.log_start_offset:
            return self.log_start_offset
        self._start.advance(offset)
        if not self.delete_segments_before(offset):
            self._start_moved()
        log.info("deleted records dir=%s log_start_offset=%s", self.directory, self.log_start_offset)
        return self.log_start_offset

    def _start_moved(self) -> None:
        """The log start moved up: what is kept about offsets below it goes too."""
        start = self.log_start_offset
        self.recovery_point = max(self.recovery_point, start)  # nothing below the start is recovered
        self.leader_epoch_cache.truncate_from_start(start)
        self.damaged.truncate_before(start)

    def _replace_segment(self, base: int, seg: Segment | None) -> None:
        """Cleaner hook: put a rewritten closed segment in place of the one at ``base``, or
        forget it (``seg`` None; never the first one). Files are the caller's business."""
        old = self._segments.get(base)
        if old is None or old is self._active or (seg is None and base == self._segments.keys()[0]):
            raise ValueError(f"{self.directory}: cannot replace segment {base}")
        if seg is None:
            del self._segments[base]
        else:
            self._segments[base] = seg

    # ------------------------------------------------------------------ reads

    def read(self, offset: int, max_bytes: int, max_offset: int | None = None) -> ReadResult:
        """Whole batches starting with the one containing ``offset``.

        If compaction removed ``offset`` the read starts at the next batch after it.

        At least one batch is returned if any exists at ``offset`` (even beyond
        ``max_bytes``); never a partial batch. Reads may span segments, never a damaged
        range (``storage.damage``): they stop before it. Records are not decoded; each batch's
        framing and offsets are checked, and its CRC once per open (bytes scanned, appended or
        read before by this process are not checked again: ``Segment.verified_upto``). The
        cost is one index lookup, a short header walk, one ``pread`` per segment touched and
        a CRC-32C over bytes not verified yet.

        A batch found damaged here has its segment repaired like at start-up
        (``storage.recovery``): the damaged range is recorded, logged and reported.

        Args:
            offset: First wanted offset (may be inside a batch).
            max_bytes: Byte budget.
            max_offset: Exclusive bound (e.g. the high watermark): batches whose base offset
                is >= it are not returned.

        Raises:
            OffsetOutOfRange: ``offset`` is below the log start or beyond the LEO.
            DamagedRangeError: ``offset`` was in damaged bytes; the error names the range.
            CorruptBatchError: Damage a repair could not place in a range.
            OSError: The disk failed.
        """
        try:
            return self._read(offset, max_bytes, max_offset)
        except _SegmentDamaged as exc:
            repair_for_read(self, exc.segment, exc.__cause__)
        try:
            return self._read(offset, max_bytes, max_offset)
        except _SegmentDamaged as exc:
            raise exc.__cause__ from None

    def _read(self, offset: int, max_bytes: int, max_offset: int | None) -> ReadResult:
        if offset < self.log_start_offset or offset > self._leo:
            raise OffsetOutOfRange(offset, self.log_start_offset, self._leo)
        hole = self.damaged.find(offset)
        if hole is not None:
            raise DamagedRangeError(offset, *hole)
        if offset == self._leo:
            return ReadResult(b"", offset, offset, 0)
        next_hole = self.damaged.next_start(offset)
        if next_hole is not None and (max_offset is None or next_hole < max_offset):
            max_offset = next_hole
        segs = self._segments
        i = segs.bisect_right(offset) - 1
        values = segs.values()
        seg = values[i]
        parts: list[bytes] = []
        first, nxt, count, budget = offset, offset, 0, max_bytes
        exact = not self.allows_gaps
        try:
            pos = seg.find_position(offset)
            while True:
                data, f, n, c = seg.read_batches(pos, budget, max_offset, count == 0, exact)
                if c:
                    if n <= offset or (exact and (f != nxt if count else f > offset)):
                        raise CorruptBatchError(f"{seg.log_path}: batch at position {pos} holds [{f}, {n}), "
                                                f"expected {nxt if count else offset}")
                    if not count:
                        first = f
                    parts.append(data)
                    budget -= len(data)
                    count += c
                    nxt = n
                if pos + len(data) < seg.size or budget <= 0:
                    break
                i += 1
                if i >= len(values):
                    break
                seg, pos = values[i], 0
        except CorruptBatchError as exc:
            raise _SegmentDamaged(seg) from exc
        return ReadResult(parts[0] if len(parts) == 1 else b"".join(parts), first, nxt, count)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """Earliest ``(offset, timestamp)`` whose timestamp is >= ``timestamp_ms``, or None
        (:func:`storage.timestamps.offset_for_timestamp` says how)."""
        return offset_for_timestamp(self, timestamp_ms)

    def segments_info(self) -> list[tuple[int, int, int, int]]:
        """``(base_offset, size, max_timestamp, last_modified_ms)`` per segment, oldest first.

        ``last_modified_ms`` is the ``now_ms`` of the last append, or the file's mtime for
        segments not appended to since opening.
        """
        return [(s.base_offset, s.size, s.max_timestamp, s.last_modified_ms) for s in self._segments.values()]

    def size_bytes(self) -> int:
        """Total bytes of all segments' data."""
        return sum(s.size for s in self._segments.values())

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Flush and release every file handle. The object is unusable afterwards."""
        if self._closed:
            return
        self.flush()
        for seg in self._segments.values():
            seg.close()
        if self._own_handles:
            self.handles.close_all()
        self._closed = True

    def delete(self, trash: Path | None = None) -> None:
        """Release handles and remove the partition directory -- or, with ``trash``, only
        rename it there (one cheap call; the caller removes it later)."""
        for seg in self._segments.values():
            seg.close()
        self._closed = True
        if trash is not None:
            os.replace(self.directory, trash)
            log.info("deleted log dir=%s (moved to %s)", self.directory, trash.name)
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        log.info("deleted log dir=%s", self.directory)

    def _check(self) -> None:
        """Verify internal invariants; raise AssertionError describing the first violation
        (:func:`storage.invariants.check_log`)."""
        check_log(self)
