"""Log compaction (``cleanup_policy = compact``): keep only the latest record per key.

Only closed segments are rewritten (the active segment is read, never touched). Every kept
record keeps its offset, so a compacted log has gaps: inside a segment (a batch is split into
runs of consecutive offsets, since record ``i`` of a batch has offset ``base + i``) and between
segments (the records at the end of a segment are gone; the next segment's base is unchanged).
A segment's base offset (its file name) stays put even if its first records are removed. A
closed segment left with no record is deleted, except the first one, which stays (empty) so
the log start offset does not move. :meth:`storage.log.Log.read` at a removed offset returns
the next batch after it.

What is kept, per closed segment:

- records with key None (always);
- the record holding the latest offset of its key over the whole log (closed and active
  segments), unless it is a tombstone (value None) in a segment whose ``max_timestamp`` is
  older than ``now_ms - delete_retention_ms``;
- whole, unchanged: batches that are not native (magic 2), fail their CRC or do not decode
  (this includes a payload that decompresses past :func:`storage.batch.decode_limit` of the
  log's ``max_message_bytes``: the cleaner never inflates a bomb), are empty, control, transactional or log-append-time batches. Their records do not enter
  the key map either (so they never cause another record to be removed).

A batch whose records are all kept is copied byte for byte. Split runs are rebuilt with the
original compression codec, producer id and epoch, leader epoch, and ``base_sequence``
shifted by the run's offset delta (so the sequence of every record is unchanged).

A pass (:class:`Cleaner`) is done in bounded steps, so a caller with an event loop never
stalls on it: :meth:`Cleaner.step` reads and writes about ``budget`` bytes and returns. A pass
has two phases:

1. **Map.** Batches are read from the log start up to ``map_end`` (the high watermark when the
   pass began, or the log end), building key -> latest offset and each producer's last batch.
   The map is bounded (``max_map_keys``): when it fills, ``map_end`` moves back to where it
   stopped and the rest waits for the next pass.
2. **Clean.** Closed segments lying wholly below ``map_end`` are visited oldest first. Each is
   scanned up to its first removable record (a segment with none costs one read); if there is
   one, the segment is rewritten into ``<base>.log.cleaned`` over as many steps as it takes,
   then swapped in.

A tombstone is only dropped after every older segment was checked against the same key map in
the same pass, so an older copy of its key can never outlive it (no resurrection). Between
steps the log may change under the pass: appends land beyond ``map_end`` and do not matter; a
segment deleted by retention is skipped (a rewrite of it is abandoned); a truncation of the log
or its closing aborts the whole pass (a truncated key may have been the latest of its key), and
an abandoned ``.cleaned`` file is deleted.

Crash safety of one segment rewrite::

    write <base>.log.cleaned and its indexes   crash: the .cleaned files are deleted on open,
      <base>.index.cleaned, .timeindex.cleaned  original intact
      (fsynced every 4 MiB and at the end)
    rename -> <base>.log.swap, fsync dir       commit point
    rename the .cleaned indexes over the old   crash: open finishes the swap
      ones (or unlink the old ones),           (:func:`complete_interrupted_swaps`; indexes
    rename .swap -> <base>.log, fsync dir      that are not there are rebuilt)
    the in-memory segment built while writing replaces the old one: nothing is read back

The cleaned file gets the original's mtime, so ``last_modified_ms`` (retention) is unchanged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generator

from storage.batch import (CONTROL_BIT, MAGIC_NATIVE, TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT, BatchHeader,
                           build_native_batch, decode_limit, decode_native_records, parse_header,
                           validate_batch)
from storage.checkpoint import fsync_dir
from storage.errors import CorruptBatchError
from storage.swap import CLEANED, CLEANED_SUFFIX, SWAP_SUFFIX, commit_swap as _commit_swap, finish_swap as _finish_swap
from storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, Segment, segment_name

if TYPE_CHECKING:
    from storage.log import Log

logger = logging.getLogger(__name__)

__all__ = ["Cleaner", "CleanResult", "clean", "dirty_ratio", "CLEANED_SUFFIX", "SWAP_SUFFIX", "MAX_MAP_KEYS"]

MAX_MAP_KEYS = 4_000_000
SYNC_EVERY_BYTES = 4 << 20  # a rewrite is fsynced as it goes: no step flushes a whole segment
BATCH_COST = 512  # budget bytes charged at least per batch: small batches cost a read and a decode each
_OPAQUE_ATTRIBUTES = TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT
_SEQ_MOD = 1 << 31

Record = tuple  # (offset, timestamp, key, value, headers) as from decode_native_records


@dataclass(frozen=True)
class CleanResult:
    """Outcome of a whole :class:`Cleaner` pass.

    Attributes:
        segments_cleaned: Closed segments rewritten (or deleted, when emptied).
        bytes_before: Their size before.
        bytes_after: Their size after.
        records_removed: Records dropped (superseded values and expired tombstones).
        cleaned_up_to: Base offset of the first segment the pass did not cover: every closed
            segment below it was checked against the pass's key map.
        aborted: The log was truncated or closed during the pass; it stopped early.
    """

    segments_cleaned: int
    bytes_before: int
    bytes_after: int
    records_removed: int
    cleaned_up_to: int
    aborted: bool = False


def dirty_ratio(log: Log, cleaned_up_to: int) -> float:
    """Bytes of closed segments at/after ``cleaned_up_to`` (never cleaned) / bytes of all
    closed segments; 0.0 when the closed segments hold no bytes."""
    closed = log.segments()[:-1]
    total = sum(s.size for s in closed)
    if total == 0:
        return 0.0
    return sum(s.size for s in closed if s.base_offset >= cleaned_up_to) / total


class Cleaner:
    """One compaction pass over ``log``, run by calling :meth:`step` until it returns True.

    Args:
        log: The log; its active segment is read but never rewritten.
        delete_retention_ms: Tombstones stay while their segment's max timestamp is at least
            ``now_ms - delete_retention_ms``.
        max_offset: If given (the high watermark, as Kafka does), records at or above it are
            ignored by the key map and segments reaching past it are not rewritten, so a
            record that may still be truncated never causes an older one to be removed.
        max_map_keys: Bound on the key map's size (its memory).
    """

    def __init__(self, log: Log, delete_retention_ms: int, max_offset: int | None = None,
                 max_map_keys: int = MAX_MAP_KEYS) -> None:
        self.log = log
        self.delete_retention_ms = delete_retention_ms
        leo = log.log_end_offset
        self.map_end = leo if max_offset is None else min(leo, max_offset)
        self.max_map_keys = max_map_keys
        self._truncations = log.truncations
        self._decode_limit = decode_limit(log.config.max_message_bytes)
        self._latest: dict = {}
        self._last_batch: dict[int, int] = {}
        self._protected: set[int] = set()
        self._now_ms = 0
        self._cleaned_up_to = log.log_start_offset
        self._cleaned = self._before = self._after = self._removed = 0
        self._aborted = False
        self._work: Generator[int, None, None] | None = self._run()

    def step(self, now_ms: int, budget: int) -> bool:
        """Do about ``budget`` bytes of reading and writing (at least one batch).

        Returns:
            True once the pass is over (finished or aborted); see :meth:`result`.
        """
        if self._work is None:
            return True
        if self.log._closed or self.log.truncations != self._truncations:
            logger.info("cleaning aborted dir=%s: the log was %s", self.log.directory,
                        "closed" if self.log._closed else "truncated")
            self._aborted = True
            self._finish()
            return True
        self._now_ms = now_ms
        spent = 0
        while True:
            try:
                spent += next(self._work)
            except StopIteration:
                self._finish()
                return True
            if spent >= budget:
                return False

    def result(self) -> CleanResult:
        """What the pass did (so far, if it is not over)."""
        return CleanResult(self._cleaned, self._before, self._after, self._removed, self._cleaned_up_to,
                           self._aborted)

    def abort(self) -> None:
        """Stop the pass now, deleting any half-written ``.cleaned`` file."""
        if self._work is not None:
            self._aborted = True
            self._finish()

    def _finish(self) -> None:
        work, self._work = self._work, None
        if work is not None:
            work.close()  # runs the rewrite's cleanup, if one is open
        if self._cleaned:
            logger.info("cleaned dir=%s segments=%s bytes=%s->%s records_removed=%s aborted=%s",
                        self.log.directory, self._cleaned, self._before, self._after, self._removed, self._aborted)

    # ------------------------------------------------------------------ the pass

    def _alive(self, seg: Segment) -> bool:
        return self.log._segments.get(seg.base_offset) is seg

    def _next_segment(self, after: int | None) -> Segment | None:
        it = self.log._segments.irange(minimum=after, inclusive=(False, True)) if after is not None \
            else self.log._segments.irange()
        base = next(iter(it), None)
        return None if base is None else self.log._segments[base]

    def _run(self) -> Generator[int, None, None]:
        yield from self._build_map()
        self._protected = set(self._last_batch.values())
        seg = self._next_segment(None)
        while seg is not None and seg is not self.log.active_segment and seg.next_offset <= self.map_end:
            yield from self._clean_segment(seg)
            self._cleaned_up_to = seg.base_offset + 1
            seg = self._next_segment(seg.base_offset)
        self._cleaned_up_to = seg.base_offset if seg is not None else self.log.log_end_offset

    def _build_map(self) -> Generator[int, None, None]:
        latest, last_batch, map_end = self._latest, self._last_batch, self.map_end
        seg = self._next_segment(None)
        while seg is not None and seg.base_offset < map_end:
            for pos, h in seg.iter_headers(0):
                if h.base_offset >= map_end:
                    return
                buf = seg.read(pos, h.size)
                if h.producer_id >= 0:
                    last_batch[h.producer_id] = h.base_offset
                records = _decode(h, buf, self._decode_limit)
                if records:
                    for off, _ts, key, _value, _headers in records:
                        if key is not None and off < map_end:
                            latest[key] = off
                yield max(h.size, BATCH_COST)
                if len(latest) >= self.max_map_keys:
                    self.map_end = h.next_offset
                    logger.info("cleaner key map full dir=%s keys=%s: this pass stops at offset %s",
                                self.log.directory, len(latest), self.map_end)
                    return
                if not self._alive(seg):  # deleted by retention while we were away
                    break
            seg = self._next_segment(seg.base_offset)

    def _keeper(self, seg: Segment) -> Callable[[Record], bool]:
        return _keeper(self._latest, seg.max_timestamp < self._now_ms - self.delete_retention_ms)

    def _clean_segment(self, seg: Segment) -> Generator[int, None, None]:
        keep = self._keeper(seg)
        protected = self._protected
        for pos, h in seg.iter_headers(0):  # scan up to the first removable record
            records = _decode(h, seg.read(pos, h.size), self._decode_limit)
            yield max(h.size, BATCH_COST)
            if not self._alive(seg):
                return
            if records and h.base_offset not in protected and not all(keep(r) for r in records):
                break
        else:
            return
        path = seg.directory / (segment_name(seg.base_offset) + CLEANED_SUFFIX)
        # the new file's indexes are built as it is written, so swapping it in costs no rebuild
        indexes = Segment(seg.directory, seg.base_offset, self.log.handles, self.log.config.index_interval_bytes,
                          self._now_ms, index_suffix=CLEANED)
        for stale in (indexes.index.path, indexes.time_index.path):  # left by an abandoned attempt
            stale.unlink(missing_ok=True)
        committed = False
        f = open(path, "wb")
        try:
            size = removed = unsynced = 0
            for pos, h in seg.iter_headers(0):
                buf = seg.read(pos, h.size)
                records = _decode(h, buf, self._decode_limit)
                out = _clean_batch(h, buf, records, keep, protected)
                for b in out:
                    f.write(b)
                    indexes._index_batch(h if b is buf else parse_header(b), size)
                    size += len(b)
                    unsynced += len(b)
                if unsynced >= SYNC_EVERY_BYTES:  # so the final fsync has little left to do
                    f.flush()
                    os.fsync(f.fileno())
                    indexes.index.flush_to_file()
                    indexes.time_index.flush_to_file()
                    unsynced = 0
                if out != [buf]:
                    removed += len(records) - sum(1 for r in records if keep(r))
                yield max(h.size, BATCH_COST) + sum(len(b) for b in out)
                if not self._alive(seg):
                    return
            f.flush()
            os.fsync(f.fileno())
            f.close()
            for index in (indexes.index, indexes.time_index):
                index.fsync()  # writes what is not in the file yet
                index.close()
            mtime_ns = seg.last_modified_ms * 1_000_000
            os.utime(path, ns=(mtime_ns, mtime_ns))
            before = seg.size
            self._swap_in(seg, path, size, indexes)
            committed = True
            self._cleaned += 1
            self._before += before
            self._after += size
            self._removed += removed
        finally:
            if not committed:
                f.close()
                for p in (path, indexes.index.path, indexes.time_index.path):
                    self.log.handles.close(p)
                    try:
                        os.unlink(p)
                    except FileNotFoundError:
                        pass

    def _swap_in(self, seg: Segment, cleaned: Path, size: int, new: Segment) -> None:
        """Replace ``seg`` by its cleaned copy (or drop it when empty and not the first)."""
        log, base = self.log, seg.base_offset
        if size == 0 and base != log._segments.keys()[0]:
            for suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIMEINDEX_SUFFIX):
                os.unlink(seg.directory / (segment_name(base) + suffix + CLEANED))
            log._replace_segment(base, None)
            seg.delete()
            fsync_dir(seg.directory)
            return
        _commit_swap(cleaned)
        seg.close()
        _finish_swap(seg.directory, base, log.handles)
        new.adopt_rewritten(seg.created_ms, seg.last_modified_ms)
        log._replace_segment(base, new)


def clean(log: Log, now_ms: int, delete_retention_ms: int, max_offset: int | None = None) -> CleanResult:
    """A whole :class:`Cleaner` pass at once (tools and tests; the broker steps one in slices)."""
    cleaner = Cleaner(log, delete_retention_ms, max_offset)
    while not cleaner.step(now_ms, 1 << 30):
        pass
    return cleaner.result()


# ---------------------------------------------------------------------- internals


def _decode(h: BatchHeader, buf: bytes, limit: int) -> list[Record] | None:
    if h.magic != MAGIC_NATIVE or h.attributes & _OPAQUE_ATTRIBUTES or h.record_count <= 0:
        return None
    try:
        validate_batch(buf)
        records = decode_native_records(buf, limit)
        for r in records:
            hash(r[2])
    except (CorruptBatchError, TypeError) as exc:
        logger.warning("cleaner keeps undecodable batch whole offset=%s: %s", h.base_offset, exc)
        return None
    return records


def _keeper(latest: dict, drop_tombstones: bool) -> Callable[[Record], bool]:
    def keep(r: Record) -> bool:
        off, _ts, key, value, _headers = r
        if key is None:
            return True
        return latest.get(key) == off and not (value is None and drop_tombstones)
    return keep


def _clean_batch(h: BatchHeader, buf: bytes, records: list[Record] | None,
                 keep: Callable[[Record], bool], protected: set[int] = frozenset()) -> list[bytes]:
    """The batches replacing one batch: itself, nothing, or one per run of kept offsets."""
    if records is None or h.base_offset in protected:
        return [buf]
    kept = [r for r in records if keep(r)]
    if len(kept) == len(records):
        return [buf]
    out: list[bytes] = []
    run: list[Record] = []
    for r in kept:
        if run and r[0] != run[-1][0] + 1:
            out.append(_build_run(h, run))
            run = []
        run.append(r)
    if run:
        out.append(_build_run(h, run))
    return out


def _build_run(h: BatchHeader, run: list[Record]) -> bytes:
    first = run[0][0]
    seq = h.base_sequence
    if seq >= 0:
        seq = (seq + first - h.base_offset) % _SEQ_MOD
    return build_native_batch([(ts, k, v, hd) for _off, ts, k, v, hd in run], base_offset=first,
                              compression=h.compression, producer_id=h.producer_id,
                              producer_epoch=h.producer_epoch, base_sequence=seq,
                              leader_epoch=h.leader_epoch)


