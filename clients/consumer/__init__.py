"""The consumer, split as in Kafka's clients (and aiokafka's).

- :mod:`.consumer`: the public :class:`Consumer` (assignment, ``poll``, positions);
- :mod:`.offsets`: offset look-ups (``list_offsets``) and the group's commits;
- :mod:`.group`: group membership (heartbeats, assignment changes);
- :mod:`.fetcher`: fetches in flight per leader, buffered batches, offset resets.
"""

from clients.consumer.consumer import Consumer

__all__ = ["Consumer"]
