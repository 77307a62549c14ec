"""Finding offsets by time in a partition log (Kafka's ListOffsets with a timestamp).

The segments' time indexes (``storage.index``) narrow the search to a short header walk;
native batches are decoded to find the exact record, other batches answer with their base
offset. Reads only: nothing here writes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage.batch import MAGIC_NATIVE, TIMESTAMP_TYPE_BIT, decode_limit, decode_native_records
from storage.errors import CorruptBatchError

if TYPE_CHECKING:
    from storage.log import Log

log = logging.getLogger(__name__)

__all__ = ["offset_for_timestamp"]


def offset_for_timestamp(lg: "Log", timestamp_ms: int) -> tuple[int, int] | None:
    """Earliest ``(offset, timestamp)`` of ``lg`` whose timestamp is >= ``timestamp_ms``.

    The batch is the first whose ``max_timestamp >= timestamp_ms`` (time index plus a
    header walk). For native batches with create-time timestamps the batch is decoded
    and the exact first record with ``timestamp >= timestamp_ms`` is returned; for other
    batches (Kafka magic 2, log-append time) the answer is the batch's base offset and
    max timestamp -- as for a native batch that does not decode, or that decompresses
    past :func:`storage.batch.decode_limit` of ``max_message_bytes`` (a few KiB on disk
    must not cost the broker gigabytes). The special values -1 (latest) / -2 (earliest)
    are the caller's job.

    Offsets below the log start (deleted records still in the batch or segment holding the
    start) are never answered: a batch holding the start answers at the start at the
    earliest, and a native batch whose only records that recent are below it is passed over.

    Returns:
        ``(offset, timestamp)``, or None if no batch is that recent.
    """
    limit = decode_limit(lg.config.max_message_bytes)
    start = after = lg.log_start_offset
    for seg in lg.segments():
        while seg.max_timestamp >= timestamp_ms and seg.next_offset > after:
            found = seg.find_timestamp(timestamp_ms, after)
            if found is None:
                break
            pos, h = found
            if h.magic != MAGIC_NATIVE or h.attributes & TIMESTAMP_TYPE_BIT:
                return max(h.base_offset, start), h.max_timestamp
            try:
                for off, ts, _k, _v, _h in decode_native_records(seg.read(pos, h.size), limit):
                    if ts >= timestamp_ms and off >= start:
                        return off, ts
            except CorruptBatchError as exc:
                log.warning("cannot decode batch for timestamp lookup dir=%s offset=%s: %s",
                            lg.directory, h.base_offset, exc)
                return max(h.base_offset, start), h.max_timestamp
            after = h.next_offset  # nothing that recent at or after the start in this batch
    return None
