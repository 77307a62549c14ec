"""Client-side partition choice (docs/protocol.md §6).

* Keyed records: ``(murmur2(key) & 0x7fffffff) % partition_count`` with the
  MurmurHash2 variant of Kafka's Java client, so a key lands where Kafka's
  default partitioner would put it.  Results are cached per (key, count) in a
  bounded dict, so hot keys cost one dict lookup.
* Null keys: a sticky round robin.  All null-key records of a topic go to one
  partition until its open batch is full or sent; then the producer calls
  :meth:`Partitioner.next_sticky` and moves to the next partition in order.
"""

from __future__ import annotations

import random

from zbroker.hashing import murmur2  # noqa: F401  (re-exported: part of the client API)


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partition_count``."""
    return (murmur2(key) & 0x7FFFFFFF) % partition_count


class Partitioner:
    """Keyed placement with a bounded cache plus the sticky null-key round robin.

    Not thread-safe by itself; the producer calls it under its accumulator lock
    or from a single thread.  Runtime: O(1) amortised per call.

    Args:
        cache_size: how many (key, partition_count) results to remember.
    """

    def __init__(self, cache_size: int = 65536) -> None:
        self._cache: dict[tuple[bytes, int], int] = {}
        self._cache_size = cache_size
        self._sticky: dict[str, int] = {}

    def keyed(self, key: bytes, partition_count: int) -> int:
        """Partition of ``key`` (cached)."""
        ck = (key, partition_count)
        p = self._cache.get(ck)
        if p is None:
            p = (murmur2(key) & 0x7FFFFFFF) % partition_count
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # cheap bound; hot keys come back at once
            self._cache[ck] = p
        return p

    def sticky(self, topic: str, partition_count: int) -> int:
        """Current sticky partition for null-key records of ``topic``."""
        p = self._sticky.get(topic)
        if p is None or p >= partition_count:
            # a random start spreads many producers' first batches across partitions
            p = self._sticky[topic] = random.randrange(partition_count) if p is None else p % partition_count
        return p

    def next_sticky(self, topic: str, partition_count: int) -> int:
        """Move ``topic``'s sticky partition to the next one in order and return it."""
        p = (self._sticky.get(topic, -1) + 1) % partition_count
        self._sticky[topic] = p
        return p
