"""Exceptions raised by the storage engine.

Each class names one thing a caller can act on:

* :class:`CorruptBatchError` -- the bytes handed in (or found on disk) are not a
  well-formed record batch. The producer (or the disk) is at fault. Two subclasses say
  which rule a producer's batch broke: :class:`InvalidRecordError` (Kafka's INVALID_RECORD)
  and :class:`UnsupportedCodecError` (UNSUPPORTED_COMPRESSION_TYPE).
* :class:`DamagedRangeError` -- a read asked for an offset lost to damaged bytes on disk;
  the error names the damaged range, so the reader can go on after it.
* :class:`OffsetOutOfRange` -- a read asked for an offset the log does not hold.
* :class:`OffsetMismatch` -- a replica append did not start at the log end offset.
* :class:`CheckpointError` -- a checkpoint file is malformed (names file and line).
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of all storage errors."""


class CorruptBatchError(StorageError, ValueError):
    """A record batch failed validation; the message names what is wrong.

    ``offset`` is the failing batch's base offset when the batch was found among others
    (None when the whole input is the one batch).
    """

    def __init__(self, message: str = "", offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class InvalidRecordError(CorruptBatchError):
    """The batch is framed and its CRC matches, but its header fields disagree with each
    other or its records do not parse (Kafka's InvalidRecordException)."""


class UnsupportedCodecError(CorruptBatchError):
    """The batch's attributes name a compression codec that is not defined (ids 5-7)."""


class DamagedRangeError(CorruptBatchError):
    """Offsets ``[start, end)`` of the log were in damaged bytes (found by recovery or by a
    read) and cannot be served; ``end`` is the first offset after them."""

    def __init__(self, offset: int, start: int, end: int) -> None:
        super().__init__(f"offset {offset} is in the damaged range [{start}, {end}): the data there is lost; "
                         f"the next readable offset is {end}", offset)
        self.start = start
        self.end = end


class OffsetOutOfRange(StorageError):
    """The requested offset is below the log start offset or above the log end offset."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} out of range [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class OffsetMismatch(StorageError, ValueError):
    """A batch appended with ``assign_offsets=False`` does not start at the log end offset."""


class CheckpointError(StorageError, ValueError):
    """A checkpoint file could not be parsed."""
