"""Sparse per-segment indexes: offset -> file position, and timestamp -> offset.

Both are appended together every ``index_interval_bytes`` of log data, pointing at the batch
being appended (the first batch of a segment is never indexed: lookups default to it).

Offset index ``<base_offset:020d>.index``, 8-byte entries, big-endian::

    +----------------------+----------------------+
    | relative_offset u32  | position u32         |   relative_offset = batch base - segment base
    +----------------------+----------------------+   position = byte position of that batch

Time index ``<base_offset:020d>.timeindex``, 12-byte entries, big-endian::

    +----------------------+----------------------+
    | timestamp i64                               |   largest max_timestamp of all batches up to
    +----------------------+----------------------+   and including the indexed batch
    | relative_offset u32  |                          base of the indexed batch
    +----------------------+

A time entry is only written when the running maximum timestamp has grown since the last
time entry, so timestamps are strictly increasing and every batch at or before an entry's
offset has ``max_timestamp <= entry.timestamp``. Entries live in memory (``array``) after
loading; the files are written lazily (:meth:`flush_to_file`, on flush, roll and close), so a
file may lag the memory: a shorter index is still a valid sparse index. Files are rewritten
whole after truncation or rebuild. Invalid files (size not a multiple of the entry size,
non-monotonic, positions beyond the log) are reported by :meth:`load` and rebuilt by the
segment from the log.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import sys
from array import array
from pathlib import Path

from storage.handles import FileHandleCache

log = logging.getLogger(__name__)

__all__ = ["OffsetIndex", "TimeIndex"]

_OFF_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")
_LITTLE = sys.byteorder == "little"


class _Index:
    """Shared file handling of the two index kinds."""

    entry_size = 0

    def __init__(self, path: Path, base_offset: int, handles: FileHandleCache) -> None:
        self.path = path
        self.base_offset = base_offset
        self._handles = handles
        self._written = 0  # entries already in the file

    def __len__(self) -> int:
        raise NotImplementedError

    def _pack(self, start: int) -> bytes:
        raise NotImplementedError

    def _read_file(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def flush_to_file(self) -> None:
        """Append the entries not yet written to the file (creating it if missing)."""
        n = len(self)
        if n == self._written and self.path.exists():
            return
        if not self.path.exists():
            self.path.touch()
            self._written = 0
        data = self._pack(self._written)
        fd = self._handles.get(self.path).fileno()
        os.pwrite(fd, data, self._written * self.entry_size)
        self._written = n

    def rewrite(self) -> None:
        """Rewrite the whole file from memory."""
        if not self.path.exists():
            self.path.touch()
        fd = self._handles.get(self.path).fileno()
        os.ftruncate(fd, 0)
        self._written = 0
        self.flush_to_file()

    def fsync(self) -> None:
        """Write pending entries and fsync the file."""
        self.flush_to_file()
        os.fsync(self._handles.get(self.path).fileno())

    def file_entries(self) -> int:
        """Number of entries known to be in the file."""
        return self._written

    def close(self) -> None:
        """Write pending entries and release the handle."""
        self.flush_to_file()
        self._handles.close(self.path)

    def delete(self) -> None:
        """Release the handle and remove the file."""
        self._handles.close(self.path)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class OffsetIndex(_Index):
    """Sparse map from batch base offset to its byte position in the segment.

    Args:
        path: The ``.index`` file.
        base_offset: Base offset of the segment.
        handles: Shared file handle cache.
    """

    entry_size = 8

    def __init__(self, path: Path, base_offset: int, handles: FileHandleCache) -> None:
        super().__init__(path, base_offset, handles)
        self.rel = array("I")
        self.pos = array("I")

    def __len__(self) -> int:
        return len(self.rel)

    def _pack(self, start: int) -> bytes:
        pack = _OFF_ENTRY.pack
        return b"".join(pack(r, p) for r, p in zip(self.rel[start:], self.pos[start:]))

    def load(self, log_size: int) -> bool:
        """Load the file into memory.

        Args:
            log_size: Size of the segment's log file; every position must be below it.

        Returns:
            True if the file exists and is valid; otherwise memory is left empty.
        """
        self.clear()
        data = self._read_file()
        if data is None or len(data) % self.entry_size:
            return False
        a = array("I", data)
        if _LITTLE:
            a.byteswap()
        rel, pos = a[0::2], a[1::2]
        for i in range(1, len(rel)):
            if rel[i] <= rel[i - 1] or pos[i] <= pos[i - 1]:
                return False
        if len(pos) and (pos[-1] >= log_size or pos[0] == 0):
            return False
        self.rel, self.pos = rel, pos
        self._written = len(rel)
        return True

    def clear(self) -> None:
        """Forget every entry in memory (the file is fixed by :meth:`rewrite`)."""
        self.rel = array("I")
        self.pos = array("I")
        self._written = 0

    def append(self, offset: int, position: int) -> None:
        """Add an entry; offsets and positions must be increasing. O(1)."""
        self.rel.append(offset - self.base_offset)
        self.pos.append(position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """Floor entry: the largest indexed batch base <= ``offset``. O(log n).

        Returns:
            ``(batch_base_offset, position)``, or ``(base_offset, 0)`` if none.
        """
        i = bisect.bisect_right(self.rel, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self.rel[i], self.pos[i]

    def last(self) -> tuple[int, int]:
        """The last entry as ``(offset, position)``, or ``(base_offset, 0)``."""
        if not self.rel:
            return self.base_offset, 0
        return self.base_offset + self.rel[-1], self.pos[-1]

    def truncate_to(self, offset: int) -> None:
        """Drop entries for batches whose base is >= ``offset``; shrink the file if needed."""
        n = bisect.bisect_left(self.rel, offset - self.base_offset) if offset > self.base_offset else 0
        if n < len(self.rel):
            del self.rel[n:], self.pos[n:]
        if n < self._written:
            self._written = n
            if self.path.exists():
                os.ftruncate(self._handles.get(self.path).fileno(), n * self.entry_size)

    def entries(self) -> list[tuple[int, int]]:
        """All entries as absolute ``(offset, position)`` pairs."""
        return [(self.base_offset + r, p) for r, p in zip(self.rel, self.pos)]


class TimeIndex(_Index):
    """Sparse map from running-maximum timestamp to the batch where it was reached.

    Args:
        path: The ``.timeindex`` file.
        base_offset: Base offset of the segment.
        handles: Shared file handle cache.
    """

    entry_size = 12

    def __init__(self, path: Path, base_offset: int, handles: FileHandleCache) -> None:
        super().__init__(path, base_offset, handles)
        self.ts = array("q")
        self.rel = array("I")

    def __len__(self) -> int:
        return len(self.ts)

    def _pack(self, start: int) -> bytes:
        pack = _TIME_ENTRY.pack
        return b"".join(pack(t, r) for t, r in zip(self.ts[start:], self.rel[start:]))

    def load(self, max_relative_offset: int) -> bool:
        """Load the file into memory.

        Args:
            max_relative_offset: Largest valid relative offset (entries beyond are invalid).

        Returns:
            True if the file exists and is valid; otherwise memory is left empty.
        """
        self.clear()
        data = self._read_file()
        if data is None or len(data) % self.entry_size:
            return False
        ts, rel = array("q"), array("I")
        for t, r in _TIME_ENTRY.iter_unpack(data):
            if ts and (t <= ts[-1] or r <= rel[-1]):
                return False
            if r > max_relative_offset:
                return False
            ts.append(t)
            rel.append(r)
        self.ts, self.rel = ts, rel
        self._written = len(ts)
        return True

    def clear(self) -> None:
        """Forget every entry in memory."""
        self.ts = array("q")
        self.rel = array("I")
        self._written = 0

    def last_timestamp(self) -> int:
        """Largest indexed timestamp, or -1."""
        return self.ts[-1] if self.ts else -1

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add ``(timestamp, offset)`` if ``timestamp`` exceeds the last indexed one. O(1)."""
        if not self.ts or timestamp > self.ts[-1]:
            self.ts.append(timestamp)
            self.rel.append(offset - self.base_offset)

    def lookup(self, timestamp: int) -> int:
        """Where to start scanning for the first batch with ``max_timestamp >= timestamp``.

        Returns the offset of the last entry whose timestamp is < ``timestamp``: every batch
        before it has a smaller max timestamp, so the answer is at or after it. Returns the
        segment base offset if there is no such entry. O(log n).
        """
        i = bisect.bisect_left(self.ts, timestamp) - 1
        if i < 0:
            return self.base_offset
        return self.base_offset + self.rel[i]

    def truncate_to(self, offset: int) -> None:
        """Drop entries for batches whose base is >= ``offset``; shrink the file if needed."""
        n = bisect.bisect_left(self.rel, offset - self.base_offset) if offset > self.base_offset else 0
        if n < len(self.rel):
            del self.ts[n:], self.rel[n:]
        if n < self._written:
            self._written = n
            if self.path.exists():
                os.ftruncate(self._handles.get(self.path).fileno(), n * self.entry_size)

    def entries(self) -> list[tuple[int, int]]:
        """All entries as absolute ``(timestamp, offset)`` pairs."""
        return [(t, self.base_offset + r) for t, r in zip(self.ts, self.rel)]
