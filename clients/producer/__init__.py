"""The producer, split as in Kafka's clients (and aiokafka's).

- :mod:`.producer`: the public :class:`Producer` (``send``, ``flush``, ``close``);
- :mod:`.accumulator`: the record accumulator, pure data (batches per partition);
- :mod:`.sender`: the I/O side, a network-thread task turning batches into requests;
- :mod:`.idempotence`: producer id, epoch and per-partition sequence numbers (pure).
"""

from clients.producer.producer import Producer

__all__ = ["Producer"]
