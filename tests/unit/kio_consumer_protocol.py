"""Kafka's ConsumerProtocol bytes read with kio's schemas: an independent reader the tests
check the broker's encoders (``frontends/kafka/groupmap.py``) and its own bounded reader
(``zbroker/groups/consumer_protocol.py``) against."""

from __future__ import annotations

import struct

from kio.schema.consumer_protocol_assignment.v0.data import ConsumerProtocolAssignment
from kio.schema.consumer_protocol_subscription.v0.data import ConsumerProtocolSubscription
from kio.serial import entity_reader

TP = tuple[str, int]
_INT16 = struct.Struct(">h")


def decode_assignment(data: bytes) -> list[TP]:
    """The partitions of a ``ConsumerProtocolAssignment`` (any version: newer versions only
    add fields after the ones read here).

    Raises:
        ValueError: the bytes are not an assignment.
    """
    value = _decode(data, ConsumerProtocolAssignment)
    return [(tp.topic, p) for tp in value.assigned_partitions for p in tp.partitions]


def decode_subscription(data: bytes) -> list[str]:
    """The topics of a ``ConsumerProtocolSubscription`` (any version, see above).

    Raises:
        ValueError: the bytes are not a subscription.
    """
    return list(_decode(data, ConsumerProtocolSubscription).topics)


def _decode(data: bytes, schema: type):
    if len(data) < 2:
        raise ValueError(f"{schema.__name__}: {len(data)} bytes is too short")
    (version,) = _INT16.unpack_from(data, 0)
    if version < 0:
        raise ValueError(f"{schema.__name__}: bad version {version}")
    try:
        value, _size = entity_reader(schema)(data, 2)
    except Exception as exc:  # kio raises several types for short or bad input
        raise ValueError(f"{schema.__name__}: {exc}") from None
    return value
