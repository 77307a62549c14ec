"""Loading a partition's segments, and losing only what is damaged.

Kafka's LogLoader truncates a partition at its first bad batch and deletes every later
segment. Batches carry their offsets, so zbroker can do better: a damaged byte range costs
the offsets that were in it and nothing else.

Theory of operation
-------------------
On open, :func:`scan_directory` lists the segment files (finishing swaps a crash
interrupted, removing strays); then (:func:`load_segments`) segments wholly below the
recovery point (fsynced before the last checkpoint) are opened trusting their data: indexes
loaded, the tail after the last index entry walked. Every other segment -- the one holding the recovery point and all later
ones; with no checkpoint, all of them -- is scanned (:meth:`storage.segment.Segment.recover`):
every batch's framing, CRC and offsets are checked. At a batch that fails, the scan goes on
only where that is provable (:func:`storage.segment._resync`): at the one position the bad
batch's length field names, if a valid batch there chains on. The bytes inside a bad batch
are never searched. Otherwise the rest of the segment is dropped. The offsets lost are
recorded durably (``storage.damage``) and logged at ERROR *before* the damaged bytes are
removed (:func:`remove_damaged_bytes`: a copy without them is swapped in crash-safely,
``storage.swap``). In an earlier segment a dropped rest loses the offsets up to the next
segment's base. In the *last* segment it is a torn tail (truncated, as in Kafka) if it
starts at or above the recovery point; below it, the offsets up to the recovery point are
recorded as lost and the log goes on there in a new segment: the log end never moves back.

Segments are not only damaged inside: a segment missing between two others, or an empty one,
leaves a gap between one segment's end and the next one's base. Unless the log is compacted
(compaction makes such gaps), the gap is recorded as damaged, never served as a silent gap.

Damage that the start-up scan did not look at (a segment below the recovery point) is found
when a read trips over it: :meth:`storage.log.Log.read` repairs that segment the same way
(:func:`repair_for_read`, synchronously, inside that read: one scan and at most one rewrite
of one segment) and the read answers with the damaged range. Damage found by a read is never
a torn tail: the log end stays.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from storage.checkpoint import fsync_dir
from storage.errors import CorruptBatchError
from storage.handles import FileHandleCache
from storage.segment import LOG_SUFFIX, Recovered, Segment
from storage.swap import CLEANED_SUFFIX, commit_swap, complete_interrupted_swaps, finish_swap

if TYPE_CHECKING:
    from storage.log import Log

log = logging.getLogger(__name__)

__all__ = ["scan_directory", "load_segments", "repair_segment", "remove_damaged_bytes"]

_COPY_CHUNK = 1 << 20
_SEGMENT_FILE = re.compile(r"^(\d{20})(\.log|\.index|\.timeindex)$")
_STRAY_SUFFIXES = (".tmp", ".deleted", ".cleaned", ".swap")


def scan_directory(directory: Path, handles: FileHandleCache, known: tuple[str, ...]) -> list[int]:
    """The base offsets of the segments in a partition directory, sorted.

    Swaps a crash interrupted are completed first (``storage.swap``); then stray files
    (``.tmp``, ``.deleted``, ``.cleaned``, ``.swap``) and indexes without their ``.log`` are
    removed. Files named in ``known`` are left alone; any other is logged and left alone.
    """
    complete_interrupted_swaps(directory, handles)  # before .swap/.cleaned are swept
    logs: set[int] = set()
    others: list[tuple[int, Path]] = []
    for entry in os.scandir(directory):
        name = entry.name
        if name.endswith(_STRAY_SUFFIXES):
            log.info("removing stray file path=%s", entry.path)
            os.unlink(entry.path)
            continue
        m = _SEGMENT_FILE.match(name)
        if m:
            if m.group(2) == LOG_SUFFIX:
                logs.add(int(m.group(1)))
            else:
                others.append((int(m.group(1)), Path(entry.path)))
        elif name not in known:
            log.warning("ignoring unknown file path=%s", entry.path)
    for base, path in others:
        if base not in logs:
            log.info("removing orphan index path=%s", path)
            os.unlink(path)
    return sorted(logs)


def load_segments(lg: "Log", bases: list[int], now_ms: int, recovery_point: int | None, trust: bool = True) -> None:
    """Open the segments at ``bases`` into ``lg`` (see the module text for what is scanned).

    Args:
        trust: False scans every segment, whatever the recovery point (the damaged-offsets
            file was malformed: ranges it held may be silent gaps now).
    """
    cfg = lg.config
    prev: Segment | None = None
    for i, base in enumerate(bases):
        nxt = bases[i + 1] if i + 1 < len(bases) else None
        seg = None
        if trust and recovery_point is not None and base < recovery_point:
            try:
                seg = Segment.open(lg.directory, base, lg.handles, cfg.index_interval_bytes, now_ms)
            except CorruptBatchError as exc:
                log.warning("segment failed to load, scanning it: %s", exc)
                seg = None
            if seg is not None and (seg.next_offset > recovery_point or (nxt is not None and seg.next_offset > nxt)):
                seg = None  # holds unflushed data, or runs into the next segment: scan it
        cont = None
        if seg is None:
            seg = Segment(lg.directory, base, lg.handles, cfg.index_interval_bytes, now_ms)
            cont = repair_segment(lg, seg, nxt, on_batch=lg._note_epoch,
                                  keep_end=recovery_point if nxt is None else None)
        if prev is not None and (nxt is not None or cont is not None) and seg.size == 0:
            log.error("partition log %s: segment %s is empty: removed", lg.directory, seg.log_path.name)
            seg.delete()
        else:
            if prev is not None and prev.next_offset < base and not lg.allows_gaps:
                _lost(lg, prev.next_offset, base,
                      f"no segment holds them (the next one, {seg.log_path.name}, starts at {base})")
            lg._segments[base] = seg
            prev = seg
        if cont is not None:  # damage below the recovery point: the log end stays where it was
            lg._segments[cont] = Segment.create(lg.directory, cont, lg.handles, cfg.index_interval_bytes, now_ms)


def repair_segment(lg: "Log", seg: Segment, next_base: int | None, on_batch=None,
                   keep_end: int | None = None) -> int | None:
    """Scan ``seg`` (of ``lg``), record and log what its damaged bytes held, remove them.

    The lost ranges are written durably before any byte is removed (a crash in between
    leaves a recorded range over intact data: harmless, never a silent gap).

    Args:
        next_base: The next segment's base offset, None for the last segment.
        on_batch: Called with every valid batch's header.
        keep_end: For the last segment: the log end that must not move back (the recovery
            point at start-up, the log end at read time). Damage below it is recorded as
            lost up to it; None treats damage with nothing after it as a torn tail.

    Returns:
        The offset the log must continue at (a new segment there), or None.
    """
    rec = seg.recover(on_batch, allow_gaps=lg.allows_gaps, max_offset=next_base,
                      known_gaps=dict(lg.damaged.ranges))
    lost = list(rec.lost)
    cont = None
    if rec.stopped is not None:
        if next_base is not None:
            lost.append((rec.stopped, next_base))
        elif keep_end is not None and rec.stopped < keep_end:
            lost.append((rec.stopped, keep_end))
            cont = keep_end
    for start, end in lost:
        _lost(lg, start, end, f"damaged bytes in {seg.log_path.name} ({'; '.join(rec.reasons)})")
    remove_damaged_bytes(seg, rec)
    if not lost and rec.reasons:
        removed = rec.file_size - sum(e - s for s, e in rec.kept)
        log.warning("partition log %s: removed a torn tail of %d bytes from %s (%s)",
                    lg.directory, removed, seg.log_path.name, "; ".join(rec.reasons))
    return cont
def _lost(lg: "Log", start: int, end: int, why: str) -> None:
    if lg.damaged.add(start, end):
        log.error("partition log %s: offsets [%d, %d) are lost: %s; later data is kept and reads of the range "
                  "answer CORRUPT_MESSAGE", lg.directory, start, end, why)


def remove_damaged_bytes(seg: Segment, rec: Recovered) -> None:
    """Make the ``.log`` file hold exactly the spans ``rec`` kept, and write the indexes
    :meth:`Segment.recover` rebuilt.

    A torn tail is truncated in place. Damage in the middle needs a copy: the kept spans are
    written to ``<base>.log.cleaned``, fsynced, and swapped in (``storage.swap``: a crash
    leaves either the old file or the new one, never a mix).
    """
    if not rec.clean:
        if rec.tail_only:
            end = rec.kept[0][1] if rec.kept else 0
            os.ftruncate(seg._fd(), end)
            os.fsync(seg._fd())
        else:
            cleaned = seg.log_path.with_name(seg.log_path.stem + CLEANED_SUFFIX)
            src = seg._fd()
            with open(cleaned, "wb") as out:
                for start, end in rec.kept:
                    pos = start
                    while pos < end:
                        chunk = os.pread(src, min(_COPY_CHUNK, end - pos), pos)
                        if not chunk:
                            raise OSError(f"{seg.log_path}: short read at {pos}")
                        out.write(chunk)
                        pos += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            commit_swap(cleaned)
            finish_swap(seg.directory, seg.base_offset, seg._handles)
        fsync_dir(seg.directory)
    seg.index.rewrite()
    seg.time_index.rewrite()


def repair_for_read(lg: "Log", seg: Segment, cause: BaseException | None) -> None:
    """A read of ``lg`` tripped over damage in ``seg``: scan and repair it as recovery would.

    Whatever is found is damage, never a torn tail: the log end does not move back (offsets
    are never handed out twice); damage at the end of the active segment continues the log
    in a new segment at the old log end.
    """
    log.error("partition log %s: a read found damage in %s (%s): scanning it", lg.directory, seg.log_path.name, cause)
    keys = lg._segments.keys()
    i = keys.index(seg.base_offset)
    next_base = keys[i + 1] if i + 1 < len(keys) else None
    active = seg is lg._active
    cont = repair_segment(lg, seg, next_base, keep_end=lg._leo if active else None)
    seg._unsynced = True
    if cont is not None:
        _continue_at(lg, cont)
    elif not active and seg.size == 0 and i > 0:  # wholly damaged: its offsets are recorded, the file goes
        del lg._segments[seg.base_offset]
        seg.delete()


def skip_damaged(lg: "Log", end: int) -> None:
    """See :meth:`storage.log.Log.skip_damaged`."""
    start = lg._leo
    if end <= start:
        return
    _lost(lg, start, end, "the leader's copy is damaged too")
    _continue_at(lg, end)


def _continue_at(lg: "Log", end: int) -> None:
    """Start a new active segment at ``end`` (> the active segment's end); the offsets in
    between are recorded as damaged."""
    old = lg._active
    if old.size == 0 and len(lg._segments) > 1:  # an empty active segment: replace it
        del lg._segments[old.base_offset]
        old.delete()
    seg = Segment.create(lg.directory, end, lg.handles, lg.config.index_interval_bytes, old.created_ms)
    lg._segments[end] = seg
    lg._active = seg
    lg._leo = end
    lg._new_files = True
    lg.flush()
