"""Leader epochs of a partition as requests see them (KIP-101, KIP-320), pure.

- :func:`check_current_epoch` -- a request that names the leader epoch it believes
  current (a follower's fetch, a Kafka consumer's fetch, list offsets or offset for
  leader epoch) is refused when this leader is in another epoch: FENCED_LEADER_EPOCH if
  the caller is behind (its metadata is stale), UNKNOWN_LEADER_EPOCH if it is ahead (this
  broker has not applied the newer epoch yet). -1 means "not checked".
- :func:`epoch_end` -- where an epoch ends in this log: the answer a follower's fetch
  uses to find divergence, and the answer to Kafka's OffsetForLeaderEpoch.
- :func:`epoch_of_offset` -- the epoch that wrote an offset (ListOffsets' leader_epoch).

All read the partition's leader-epoch cache (:class:`storage.LeaderEpochCache`), which
records ``(epoch, start offset)`` for every epoch this log holds records of, plus the
current epoch from the moment this broker leads it.
"""

from __future__ import annotations

import bisect

from zbroker.core.partition import Partition
from zbroker.errors import ErrorCode, RequestError

UNDEFINED = -1


def check_current_epoch(part: Partition, epoch: int) -> None:
    """Refuse a request made in another leader epoch than this leader's (-1: no check).

    Raises:
        RequestError: FENCED_LEADER_EPOCH (the caller's epoch is older),
            UNKNOWN_LEADER_EPOCH (newer).
    """
    if 0 <= epoch < part.leader_epoch:
        raise RequestError(ErrorCode.FENCED_LEADER_EPOCH, f"leader epoch {epoch} is older than {part.leader_epoch}")
    if epoch > part.leader_epoch:
        raise RequestError(ErrorCode.UNKNOWN_LEADER_EPOCH, f"leader epoch {epoch} is newer than {part.leader_epoch}")


def epoch_end(part: Partition, epoch: int) -> tuple[int, int]:
    """``(epoch, end_offset)``: the largest epoch <= ``epoch`` this log knows and the offset
    where it ends (the log end for the latest epoch); ``(-1, -1)`` if ``epoch`` is -1,
    newer than every epoch here, or the log knows none (Kafka's answer).

    Runtime: O(log(epochs)).
    """
    return part.log.leader_epoch_cache.end_offset_for(epoch, part.log.log_end_offset)


def epoch_of_offset(part: Partition, offset: int) -> int:
    """The leader epoch that wrote ``offset`` (the latest epoch starting at or before it),
    or -1 if the cache has none.

    Runtime: O(epochs) (the cache holds one entry per leader change).
    """
    entries = part.log.leader_epoch_cache.entries
    i = bisect.bisect_right([start for _epoch, start in entries], offset)
    return entries[i - 1][0] if i else UNDEFINED
