"""A partition's log start offset when it is not a segment boundary (Kafka's logStartOffset).

Retention deletes whole segments, so its log start is the first segment's base offset and
needs no file. Deleting records (Kafka's DeleteRecords, :meth:`storage.log.Log.delete_records_before`)
may put the log start inside a segment; that offset is kept in the file ``log-start-offset``
in the partition directory (the checkpoint text format of ``storage.checkpoint``, written
atomically: tmp, fsync, rename, fsync of the directory)::

    0                 <- format version
    1                 <- number of entries
    1337              <- offsets below 1337 are deleted

The log start is ``max(this offset, first segment's base offset)``: once retention deletes
past it the file is stale and harmless. It is written before the call that moves the start
returns, so a restart -- clean or after kill -9 -- never serves the deleted records again.

Why a file per partition rather than Kafka's one broker-wide ``log-start-offset-checkpoint``:
Kafka writes that file every minute, so a crash can bring deleted records back; writing a
broker-wide file on every move would cost a write of every partition's entry. A per-partition
file costs one small atomic write per move and lives with the log (like
``leader-epoch-checkpoint``), so :class:`storage.log.Log` alone keeps it right.

A file that cannot be read is discarded with an ERROR (the log start falls back to the first
segment's base offset, as Kafka does with an unreadable checkpoint): a replica then adopts the
leader's log start again at its next fetch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from storage.checkpoint import CHECKPOINT_VERSION, fsync_dir, parse_versioned_lines, write_atomic
from storage.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["LogStartOffset", "FILE_NAME"]

FILE_NAME = "log-start-offset"


class LogStartOffset:
    """The persisted lower bound of a log's start offset (0: none recorded).

    Args:
        path: The ``log-start-offset`` file (need not exist).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset = 0
        try:
            self.offset = self._read()
        except CheckpointError as exc:
            log.error("discarding malformed log start offset file (deleted records below the log start may be "
                      "served again until the leader's log start is adopted): %s", exc)
            self._remove()

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0
        except UnicodeDecodeError as exc:
            raise CheckpointError(f"{self.path}: not UTF-8 text: {exc}") from None
        entries = parse_versioned_lines(self.path, text, 1)
        if len(entries) != 1:
            raise CheckpointError(f"{self.path}: line 2: expected 1 entry, got {len(entries)}")
        try:
            offset = int(entries[0][0])
        except ValueError:
            raise CheckpointError(f"{self.path}: line 3: offset must be an integer") from None
        if offset < 0:
            raise CheckpointError(f"{self.path}: line 3: negative offset {offset}")
        return offset

    def advance(self, offset: int) -> None:
        """Record durably that everything below ``offset`` is deleted (no-op unless higher)."""
        if offset > self.offset:
            write_atomic(self.path, f"{CHECKPOINT_VERSION}\n1\n{offset}\n".encode("ascii"))
            self.offset = offset

    def reset(self, offset: int) -> None:
        """The log restarts empty at ``offset``: forget a recorded start above it."""
        if self.offset > offset:
            self._remove()

    def _remove(self) -> None:
        self.offset = 0
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return
        fsync_dir(self.path.parent)
