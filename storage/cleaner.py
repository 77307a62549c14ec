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
- whole, unchanged: batches that are not native (magic 2), fail their CRC or do not decode,
  are empty, control, transactional or log-append-time batches. Their records do not enter
  the key map either (so they never cause another record to be removed).

A batch whose records are all kept is copied byte for byte. Split runs are rebuilt with the
original compression codec, producer id and epoch, leader epoch, and ``base_sequence``
shifted by the run's offset delta (so the sequence of every record is unchanged).

Slices: each :func:`clean` call builds the key map over the whole log, then walks the closed
segments oldest first, rewriting those that have anything to remove, until about
``max_bytes`` have been rewritten. Segments with nothing to remove are skipped, so repeated
calls make progress without any cursor. A tombstone is only dropped after every older segment
was checked against the same key map in the same call, so an older copy of its key can never
outlive it (no resurrection across slices).

Crash safety of one segment rewrite::

    write <base>.log.cleaned, fsync          crash: .cleaned is deleted on open, original intact
    rename -> <base>.log.swap, fsync dir     commit point
    unlink <base>.index/.timeindex,          crash: open finishes the swap
    rename .swap -> <base>.log, fsync dir    (:func:`complete_interrupted_swaps`)
    open the segment (indexes rebuilt)

The cleaned file gets the original's mtime, so ``last_modified_ms`` (retention) is unchanged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from storage.batch import (CONTROL_BIT, MAGIC_NATIVE, TIMESTAMP_TYPE_BIT, TRANSACTIONAL_BIT, BatchHeader,
                           build_native_batch, decode_native_records, validate_batch)
from storage.checkpoint import fsync_dir
from storage.errors import CorruptBatchError
from storage.handles import FileHandleCache
from storage.segment import INDEX_SUFFIX, LOG_SUFFIX, TIMEINDEX_SUFFIX, Segment, segment_name

if TYPE_CHECKING:
    from storage.log import Log

logger = logging.getLogger(__name__)

__all__ = ["CleanResult", "clean", "dirty_ratio", "complete_interrupted_swaps",
           "CLEANED_SUFFIX", "SWAP_SUFFIX"]

CLEANED_SUFFIX = LOG_SUFFIX + ".cleaned"
SWAP_SUFFIX = LOG_SUFFIX + ".swap"
_OPAQUE_ATTRIBUTES = TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT
_SEQ_MOD = 1 << 31

Record = tuple  # (offset, timestamp, key, value, headers) as from decode_native_records


@dataclass(frozen=True)
class CleanResult:
    """Outcome of one :func:`clean` slice.

    Attributes:
        segments_cleaned: Closed segments rewritten (or deleted, when emptied).
        bytes_before: Their size before.
        bytes_after: Their size after.
        records_removed: Records dropped (superseded values and expired tombstones).
        done: False when the byte budget ran out while a segment still had records to
            remove (call again).
    """

    segments_cleaned: int
    bytes_before: int
    bytes_after: int
    records_removed: int
    done: bool


def dirty_ratio(log: Log, cleaned_up_to: int) -> float:
    """Bytes of closed segments at/after ``cleaned_up_to`` (never cleaned) / bytes of all
    closed segments; 0.0 when the closed segments hold no bytes."""
    closed = log.segments()[:-1]
    total = sum(s.size for s in closed)
    if total == 0:
        return 0.0
    return sum(s.size for s in closed if s.base_offset >= cleaned_up_to) / total


def clean(log: Log, now_ms: int, delete_retention_ms: int, max_bytes: int = 64 << 20,
          cleaned_up_to: int = 0, max_offset: int | None = None) -> CleanResult:
    """One bounded slice of cleaning (see the module docstring).

    Args:
        log: The log; its active segment is read but never rewritten.
        now_ms: Current time.
        delete_retention_ms: Tombstones stay while their segment's max timestamp is at least
            ``now_ms - delete_retention_ms``.
        max_bytes: About how many bytes of segment data to rewrite in this call (at least
            one segment is rewritten if any needs it).
        cleaned_up_to: Accepted for the caller's bookkeeping (:func:`dirty_ratio`); not
            needed here, since segments with nothing to remove are found and skipped.
        max_offset: If given (the high watermark, as Kafka does), records at or above it
            are ignored by the key map and segments reaching past it are not rewritten, so
            a record that may still be truncated never causes an older one to be removed.

    Returns:
        What was done.
    """
    segments = log.segments()
    latest, protected = _key_map(segments, max_offset)
    horizon = now_ms - delete_retention_ms
    cleaned = before = after = removed = 0
    done = True
    for seg in segments[:-1]:
        if max_offset is not None and seg.next_offset > max_offset:
            break
        keep = _keeper(latest, seg.max_timestamp < horizon)
        n = _count_removable(seg, keep, protected)
        if not n:
            continue
        if cleaned and before + seg.size > max_bytes:
            done = False
            break
        before += seg.size
        after += _rewrite(log, seg, keep, now_ms, protected)
        removed += n
        cleaned += 1
    if cleaned:
        logger.info("cleaned dir=%s segments=%s bytes=%s->%s records_removed=%s done=%s",
                 log.directory, cleaned, before, after, removed, done)
    return CleanResult(cleaned, before, after, removed, done)


def complete_interrupted_swaps(directory: Path, handles: FileHandleCache | None = None) -> int:
    """Recovery: finish every swap whose ``<base>.log.swap`` file exists (called on log open).

    ``.cleaned`` files (interrupted before the commit point) are left to the caller's stray
    file sweep.

    Returns:
        Number of swaps completed.
    """
    n = 0
    for entry in os.scandir(directory):
        stem = entry.name[:-len(SWAP_SUFFIX)]
        if entry.name.endswith(SWAP_SUFFIX) and len(stem) == 20 and stem.isdigit():
            logger.info("completing interrupted segment swap path=%s", entry.path)
            _finish_swap(Path(directory), int(stem), handles)
            n += 1
    return n


# ---------------------------------------------------------------------- internals


def _batches(seg: Segment) -> Iterator[tuple[BatchHeader, bytes, list[Record] | None]]:
    """``(header, batch bytes, records)`` per batch; records None for opaque batches."""
    for pos, h in seg.iter_headers(0):
        buf = seg.read(pos, h.size)
        yield h, buf, _decode(h, buf)


def _decode(h: BatchHeader, buf: bytes) -> list[Record] | None:
    if h.magic != MAGIC_NATIVE or h.attributes & _OPAQUE_ATTRIBUTES or h.record_count <= 0:
        return None
    try:
        validate_batch(buf)
        records = decode_native_records(buf)
        for r in records:
            hash(r[2])
    except (CorruptBatchError, TypeError) as exc:
        logger.warning("cleaner keeps undecodable batch whole offset=%s: %s", h.base_offset, exc)
        return None
    return records


def _key_map(segments: list[Segment], max_offset: int | None) -> tuple[dict, set[int]]:
    """key -> latest offset below ``max_offset`` over the given segments (oldest first), and the
    base offsets of each producer id's last batch: those stay whole (as in Kafka), so the
    producer state rebuilt from batch headers keeps every producer's last sequence number."""
    latest: dict = {}
    last_batch: dict[int, int] = {}
    for seg in segments:
        for h, _buf, records in _batches(seg):
            if max_offset is not None and h.base_offset >= max_offset:
                continue
            if h.producer_id >= 0:
                last_batch[h.producer_id] = h.base_offset
            if records:
                for off, _ts, key, _value, _headers in records:
                    if key is not None and (max_offset is None or off < max_offset):
                        latest[key] = off
    return latest, set(last_batch.values())


def _keeper(latest: dict, drop_tombstones: bool) -> Callable[[Record], bool]:
    def keep(r: Record) -> bool:
        off, _ts, key, value, _headers = r
        if key is None:
            return True
        return latest.get(key) == off and not (value is None and drop_tombstones)
    return keep


def _count_removable(seg: Segment, keep: Callable[[Record], bool], protected: set[int] = frozenset()) -> int:
    return sum(1 for h, _b, records in _batches(seg) if records and h.base_offset not in protected
               for r in records if not keep(r))


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


def _write_cleaned(seg: Segment, keep: Callable[[Record], bool], protected: set[int] = frozenset()) -> tuple[Path, int]:
    """Step 1: write and fsync ``<base>.log.cleaned``. Returns its path and size."""
    path = seg.directory / (segment_name(seg.base_offset) + CLEANED_SUFFIX)
    size = 0
    with open(path, "wb") as f:
        for h, buf, records in _batches(seg):
            for b in _clean_batch(h, buf, records, keep, protected):
                f.write(b)
                size += len(b)
        f.flush()
        os.fsync(f.fileno())
    mtime_ns = seg.last_modified_ms * 1_000_000
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path, size


def _commit_swap(cleaned: Path) -> Path:
    """Step 2 (the commit point): rename ``.cleaned`` to ``.swap`` durably."""
    swap = cleaned.with_name(cleaned.name[:-len(CLEANED_SUFFIX)] + SWAP_SUFFIX)
    os.replace(cleaned, swap)
    fsync_dir(cleaned.parent)
    return swap


def _finish_swap(directory: Path, base: int, handles: FileHandleCache | None) -> None:
    """Step 3: drop the old indexes, rename ``.swap`` over ``.log`` durably."""
    stem = directory / segment_name(base)
    for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX, LOG_SUFFIX):
        if handles is not None:
            handles.close(str(stem) + suffix)
    for suffix in (INDEX_SUFFIX, TIMEINDEX_SUFFIX):
        try:
            os.unlink(str(stem) + suffix)
        except FileNotFoundError:
            pass
    os.replace(str(stem) + SWAP_SUFFIX, str(stem) + LOG_SUFFIX)
    fsync_dir(directory)


def _rewrite(log: Log, seg: Segment, keep: Callable[[Record], bool], now_ms: int,
             protected: set[int] = frozenset()) -> int:
    """Replace one closed segment by its cleaned version. Returns the new size."""
    base = seg.base_offset
    cleaned, size = _write_cleaned(seg, keep, protected)
    if size == 0 and base != log.log_start_offset:
        os.unlink(cleaned)
        log._replace_segment(base, None)
        seg.delete()
        fsync_dir(seg.directory)
        return 0
    _commit_swap(cleaned)
    seg.close()
    _finish_swap(seg.directory, base, log.handles)
    new = Segment.open(seg.directory, base, log.handles, log.config.index_interval_bytes, now_ms)
    log._replace_segment(base, new)
    return size
