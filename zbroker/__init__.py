"""zbroker: a Kafka-style distributed commit log over ZeroMQ + msgpack.

``from zbroker import Producer, Consumer, Admin`` gives the client classes of
:mod:`clients` (imported lazily, so the broker process does not load them).
"""

__version__ = "0.1.0"

_CLIENT_NAMES = {
    "Producer",
    "Consumer",
    "Admin",
    "Record",
    "RecordMetadata",
    "TopicDescription",
    "PartitionInfo",
    "ClusterDescription",
    "BrokerInfo",
    "TopicPartition",
    "OffsetAndTimestamp",
    "GroupDescription",
    "MemberInfo",
    "OffsetInfo",
    "ClientQuota",
}

__all__ = sorted(_CLIENT_NAMES)


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        import clients

        return getattr(clients, name)
    raise AttributeError(f"module 'zbroker' has no attribute {name!r}")
