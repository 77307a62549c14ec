"""The damaged offset ranges of a partition, kept durably: what recovery or a read lost.

File ``damaged-offsets`` in the partition directory (the checkpoint text format of
``storage.checkpoint``, written atomically), one half-open range per line::

    0                 <- format version
    2                 <- number of ranges
    1200 1337         <- offsets [1200, 1337) were in damaged bytes and are gone
    5000 5001

Ranges are sorted, disjoint and never empty. They shrink with the log: retention and
truncation drop what they remove (:meth:`DamagedRanges.truncate_before`,
:meth:`DamagedRanges.truncate_from`). A range in a compacted log may cover offsets that
compaction had removed anyway: the bytes that were there cannot tell.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

from storage.checkpoint import CHECKPOINT_VERSION, fsync_dir, read_int_pairs, write_atomic
from storage.errors import CheckpointError

__all__ = ["DamagedRanges", "FILE_NAME"]

FILE_NAME = "damaged-offsets"


class DamagedRanges:
    """Sorted disjoint ``[start, end)`` offset ranges, persisted on every change.

    Args:
        path: The ``damaged-offsets`` file (need not exist).

    Raises:
        CheckpointError: The file is malformed (the message names file and line).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.ranges: list[tuple[int, int]] = []
        for i, (s, e) in enumerate(read_int_pairs(self.path, "offsets"), start=3):
            if not 0 <= s < e or (self.ranges and s < self.ranges[-1][1]):
                raise CheckpointError(f"{self.path}: line {i}: range [{s}, {e}) is empty or out of order")
            self.ranges.append((s, e))

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def find(self, offset: int) -> tuple[int, int] | None:
        """The range holding ``offset``, or None. O(log n)."""
        i = bisect.bisect_right(self.ranges, (offset, 1 << 64)) - 1
        if i >= 0 and self.ranges[i][0] <= offset < self.ranges[i][1]:
            return self.ranges[i]
        return None

    def next_start(self, offset: int) -> int | None:
        """Start of the first range beginning after ``offset``, or None. O(log n)."""
        i = bisect.bisect_right(self.ranges, (offset, 1 << 64))
        return self.ranges[i][0] if i < len(self.ranges) else None

    def add(self, start: int, end: int) -> bool:
        """Record ``[start, end)`` (merged with overlapping or touching ranges).

        Returns:
            True if anything new was recorded (and written).
        """
        if start >= end or any(s <= start and end <= e for s, e in self.ranges):
            return False
        keep = []
        for s, e in self.ranges:
            if e < start or s > end:
                keep.append((s, e))
            else:
                start, end = min(s, start), max(e, end)
        keep.append((start, end))
        self._set(sorted(keep))
        return True

    def truncate_from(self, offset: int) -> None:
        """The log lost everything at and after ``offset`` (truncation)."""
        self._set([(s, min(e, offset)) for s, e in self.ranges if s < offset])

    def truncate_before(self, offset: int) -> None:
        """The log lost everything before ``offset`` (retention, a new log start)."""
        self._set([(max(s, offset), e) for s, e in self.ranges if e > offset])

    def _set(self, ranges: list[tuple[int, int]]) -> None:
        if ranges == self.ranges:
            return
        self.ranges = ranges
        if not ranges:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return
            fsync_dir(self.path.parent)
            return
        lines = [str(CHECKPOINT_VERSION), str(len(ranges))] + [f"{s} {e}" for s, e in ranges]
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("ascii"))
