"""Leader epoch cache: which leader epoch started at which offset (KIP-101).

File ``leader-epoch-checkpoint`` in the partition directory, text, written atomically::

    0               <- format version
    2               <- number of entries
    0 0             <- epoch start_offset
    3 1200

Epochs and start offsets are both strictly increasing. A follower asks the leader for the
end offset of its latest epoch and truncates to it, instead of trusting its high watermark.
"""

from __future__ import annotations

import bisect
import logging
import os
from pathlib import Path
from typing import Callable

from storage.checkpoint import CHECKPOINT_VERSION, read_int_pairs, write_atomic
from storage.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["LeaderEpochCache", "UNDEFINED_EPOCH", "UNDEFINED_EPOCH_OFFSET", "FILE_NAME"]

FILE_NAME = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


class LeaderEpochCache:
    """In-memory list of ``(epoch, start_offset)`` mirrored to a checkpoint file.

    Args:
        path: The ``leader-epoch-checkpoint`` file.
        log_end_offset: Callable returning the log's current end offset, used by
            :meth:`end_offset_for` when no explicit end offset is passed.

    Raises:
        CheckpointError: The file exists but is malformed.
    """

    def __init__(self, path: str | os.PathLike, log_end_offset: Callable[[], int] | None = None) -> None:
        self.path = Path(path)
        self._leo = log_end_offset
        self._epochs: list[int] = []
        self._starts: list[int] = []
        for i, (epoch, start) in enumerate(read_int_pairs(self.path, "epoch and offset"), start=3):
            if self._epochs and (epoch <= self._epochs[-1] or start < self._starts[-1]):
                raise CheckpointError(f"{self.path}: line {i}: entries not increasing")
            self._epochs.append(epoch)
            self._starts.append(start)

    @property
    def entries(self) -> list[tuple[int, int]]:
        """A copy of the ``(epoch, start_offset)`` entries, oldest first."""
        return list(zip(self._epochs, self._starts))

    @property
    def latest_epoch(self) -> int | None:
        """The newest epoch, or None when the cache is empty."""
        return self._epochs[-1] if self._epochs else None

    def start_offset_of(self, epoch: int) -> int | None:
        """Start offset of ``epoch`` if it is in the cache."""
        i = bisect.bisect_left(self._epochs, epoch)
        if i < len(self._epochs) and self._epochs[i] == epoch:
            return self._starts[i]
        return None

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that ``epoch`` starts at ``start_offset``.

        An epoch not newer than the latest is ignored. Entries whose start offset is at or
        beyond ``start_offset`` are replaced (they belonged to a log that was truncated).

        Returns:
            True if the cache changed (and was written to disk).
        """
        if epoch < 0:
            return False
        if self._epochs and epoch <= self._epochs[-1]:
            if epoch < self._epochs[-1]:
                log.warning("ignoring stale leader epoch path=%s epoch=%s latest=%s",
                            self.path, epoch, self._epochs[-1])
            return False
        while self._starts and self._starts[-1] >= start_offset:
            self._epochs.pop()
            self._starts.pop()
        self._epochs.append(epoch)
        self._starts.append(start_offset)
        self._persist()
        return True

    def end_offset_for(self, epoch: int, log_end_offset: int | None = None) -> tuple[int, int]:
        """Answer an OffsetsForLeaderEpoch request (KIP-101 / KIP-279 semantics).

        Args:
            epoch: The requested leader epoch.
            log_end_offset: Current LEO; defaults to the callable given at construction.

        Returns:
            ``(epoch, end_offset)``: for the latest epoch, the LEO; for an older epoch, the
            largest epoch <= requested and the start offset of the first epoch above it; for
            an epoch older than every entry, ``(epoch, first start offset)``;
            ``(-1, -1)`` if unknown (empty cache, epoch -1, or epoch newer than the latest).
        """
        if epoch == UNDEFINED_EPOCH or not self._epochs:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if epoch == self._epochs[-1]:
            if log_end_offset is None:
                if self._leo is None:
                    raise ValueError("end_offset_for needs log_end_offset")
                log_end_offset = self._leo()
            return epoch, log_end_offset
        hi = bisect.bisect_right(self._epochs, epoch)  # first entry with epoch > requested
        if hi == len(self._epochs):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if hi == 0:
            return epoch, self._starts[0]
        return self._epochs[hi - 1], self._starts[hi]

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop entries starting at or after ``end_offset`` (the log was truncated there)."""
        n = bisect.bisect_left(self._starts, end_offset)
        if n < len(self._starts):
            del self._epochs[n:], self._starts[n:]
            log.info("leader epoch cache truncated from end path=%s end_offset=%s", self.path, end_offset)
            self._persist()

    def truncate_from_start(self, start_offset: int) -> None:
        """Forget epochs wholly below ``start_offset``; the epoch covering it now starts there."""
        n = bisect.bisect_right(self._starts, start_offset)  # entries with start <= start_offset
        if n == 0:
            return
        if n == 1 and self._starts[0] == start_offset:
            return
        del self._epochs[: n - 1], self._starts[: n - 1]
        self._starts[0] = start_offset
        self._persist()

    def clear(self) -> None:
        """Remove every entry."""
        if self._epochs:
            self._epochs.clear()
            self._starts.clear()
            self._persist()

    def _persist(self) -> None:
        lines = [str(CHECKPOINT_VERSION), str(len(self._epochs))]
        lines += [f"{e} {s}" for e, s in zip(self._epochs, self._starts)]
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("ascii"))
