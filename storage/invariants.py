"""The partition log's invariants, checked in full (tests and debugging; never the hot path).

:func:`check_log` walks every segment of a :class:`storage.log.Log` and raises
AssertionError naming the first broken invariant (the list is in ``storage.log``'s module
text): segments ordered and not overlapping, only the last one active, the log end and the
recovery point where they must be, each segment's size, batch chain, offset index and time
index agreeing with its bytes.  It reads every header, so it costs a walk of the whole log.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.log import Log

__all__ = ["check_log"]


def check_log(lg: "Log") -> None:
    """Verify ``lg``'s invariants; raise AssertionError describing the first violation."""
    def fail(msg: str) -> None:
        raise AssertionError(f"{lg.directory}: {msg}")

    segs = list(lg._segments.values())
    if not segs:
        fail("no segments")
    if segs[-1] is not lg._active:
        fail("active segment is not the last")
    if lg._leo != lg._active.next_offset:
        fail(f"LEO {lg._leo} != active next_offset {lg._active.next_offset}")
    if not (lg.log_start_offset <= lg.recovery_point <= lg._leo):
        fail(f"recovery point {lg.recovery_point} outside [{lg.log_start_offset}, {lg._leo}]")
    for i, seg in enumerate(segs):
        if lg._segments.keys()[i] != seg.base_offset:
            fail(f"segment keyed {lg._segments.keys()[i]} has base {seg.base_offset}")
        if i + 1 < len(segs) and seg.next_offset > segs[i + 1].base_offset:
            fail(f"segment {seg.base_offset} ends at {seg.next_offset}, next starts at {segs[i + 1].base_offset}")
        if 0 < i < len(segs) - 1 and seg.size == 0:
            fail(f"closed segment {seg.base_offset} is empty")
        if os.path.getsize(seg.log_path) != seg.size:
            fail(f"segment {seg.base_offset} size {seg.size} != file size {os.path.getsize(seg.log_path)}")
        starts = {}
        expected, max_ts, end = seg.base_offset, -1, 0
        for p, h in seg.iter_headers(0):
            if h.base_offset < expected:
                fail(f"segment {seg.base_offset}: batch at {p} has base {h.base_offset}, expected >= {expected}")
            starts[h.base_offset] = p
            expected, max_ts, end = h.next_offset, max(max_ts, h.max_timestamp), p + h.size
        if end != seg.size or expected != seg.next_offset or max_ts != seg.max_timestamp:
            fail(f"segment {seg.base_offset}: walk gives end={end} next={expected} max_ts={max_ts}, "
                 f"segment says size={seg.size} next={seg.next_offset} max_ts={seg.max_timestamp}")
        prev = (-1, -1)
        for off, pos in seg.index.entries():
            if off <= prev[0] or pos <= prev[1]:
                fail(f"segment {seg.base_offset}: offset index not increasing at {off}")
            if starts.get(off) != pos:
                fail(f"segment {seg.base_offset}: index entry ({off}, {pos}) is not a batch start")
            prev = (off, pos)
        prev = (-1 << 63, -1)
        for ts, off in seg.time_index.entries():
            if ts <= prev[0] or off <= prev[1]:
                fail(f"segment {seg.base_offset}: time index not increasing at {off}")
            if off not in starts or ts > max_ts:
                fail(f"segment {seg.base_offset}: time entry ({ts}, {off}) invalid")
            prev = (ts, off)
        for idx in (seg.index, seg.time_index):
            if idx.path.exists() and os.path.getsize(idx.path) != idx.file_entries() * idx.entry_size:
                fail(f"{idx.path}: file size does not match {idx.file_entries()} written entries")
