"""zbroker's Python client library: Producer, Consumer, Admin and their value types.

``from zbroker import Producer, Consumer, Admin`` gives the same objects.
"""

from clients.admin import Admin
from clients.consumer import Consumer
from clients.producer import Producer
from clients.structs import (
    BrokerInfo,
    ClientQuota,
    ClusterDescription,
    GroupDescription,
    MemberInfo,
    OffsetAndTimestamp,
    OffsetInfo,
    PartitionInfo,
    Record,
    RecordMetadata,
    TopicDescription,
    TopicPartition,
)

__all__ = [
    "Admin",
    "BrokerInfo",
    "ClientQuota",
    "ClusterDescription",
    "Consumer",
    "GroupDescription",
    "MemberInfo",
    "OffsetAndTimestamp",
    "OffsetInfo",
    "PartitionInfo",
    "Producer",
    "Record",
    "RecordMetadata",
    "TopicDescription",
    "TopicPartition",
]
