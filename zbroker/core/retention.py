"""Retention decisions (pure): which closed segments a partition may delete now.

Kafka's rules, applied to whole closed segments, oldest first, never the active one
and never above the high watermark (a follower may not yet have what lies there):

- ``retention_ms`` (>= 0): a segment whose newest record is older than
  ``now - retention_ms`` goes;
- ``retention_bytes`` (>= 0): the oldest segments go while what would remain is
  still at least ``retention_bytes`` -- so a partition holds at most about
  ``retention_bytes + segment_bytes``.

Deletion stops at the first segment that is kept: the log start only moves forward
over a contiguous prefix.  The caller (the broker, every ``retention_check_ms``, a
bounded number of partitions per event-loop turn) deletes with
``Log.delete_segments_before(cutoff)``.
"""

from __future__ import annotations


def retention_cutoff(
    segments: list[tuple[int, int, int, int]],
    high_watermark: int,
    now_ms: int,
    retention_ms: int,
    retention_bytes: int,
) -> int | None:
    """The offset to delete whole segments below, or None.

    Args:
        segments: ``(base_offset, size_bytes, max_timestamp, last_modified_ms)`` oldest
            first, the active segment last (``Log.segments_info()``).
        high_watermark: nothing at or above it is deleted.
    """
    if len(segments) < 2 or (retention_ms < 0 and retention_bytes < 0):
        return None
    total = sum(s[1] for s in segments)
    cutoff = None
    for i, (_base, size, max_ts, last_modified) in enumerate(segments[:-1]):
        next_base = segments[i + 1][0]
        if next_base > high_watermark:
            break
        newest = max_ts if max_ts >= 0 else last_modified
        expired = retention_ms >= 0 and newest < now_ms - retention_ms
        oversize = retention_bytes >= 0 and total - size >= retention_bytes
        if not (expired or oversize):
            break
        cutoff = next_base
        total -= size
    return cutoff
