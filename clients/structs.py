"""Value types returned by the client API (fixed attribute names, see DESIGN.md §7).

All are immutable.  :class:`Record` is a ``NamedTuple`` because one is built
per consumed record and a tuple is the cheapest object Python can make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class TopicPartition(NamedTuple):
    """A (topic, partition) pair; usable wherever a plain tuple is."""

    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where a produced record landed.

    ``offset`` is -1 for ``acks=0`` (the broker sends no answer).
    ``timestamp`` is the record's create time in ms since the epoch.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int


class Record(NamedTuple):
    """One consumed record.

    ``key``/``value`` are ``bytes`` or ``None`` (or whatever the consumer's
    deserializers return); ``headers`` is a ``dict[str, bytes]`` (``{}`` when none).
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: dict


class OffsetAndTimestamp(NamedTuple):
    """Answer of :meth:`Consumer.offsets_for_times` for one partition."""

    offset: int
    timestamp: int


@dataclass(frozen=True)
class PartitionInfo:
    """One partition as the cluster describes it."""

    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    leader_epoch: int
    log_start_offset: int = -1
    high_watermark: int = -1
    log_end_offset: int = -1
    error: int = 0


@dataclass(frozen=True)
class TopicDescription:
    """Answer of :meth:`Admin.describe_topic`; ``config`` holds every effective setting."""

    name: str
    partitions: list[PartitionInfo]
    config: dict
    internal: bool = False
    overrides: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BrokerInfo:
    """One broker of the cluster."""

    id: int
    host: str
    port: int
    alive: bool = True


@dataclass(frozen=True)
class ClusterDescription:
    """Answer of :meth:`Admin.describe_cluster`."""

    cluster_name: str
    controller: int
    controller_epoch: int
    brokers: list[BrokerInfo]


@dataclass(frozen=True)
class MemberInfo:
    """One member of a consumer group; ``assignment`` is a list of (topic, partition).

    ``instance_id`` is the static member id (None for a dynamic member), ``topics`` the
    subscription, ``member_epoch`` the member's current epoch and ``revoking`` the
    partitions it still holds while handing them over to another member.
    """

    member_id: str
    client_id: str
    assignment: list[tuple[str, int]]
    instance_id: str | None = None
    topics: tuple[str, ...] = ()
    member_epoch: int = 0
    revoking: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class OffsetInfo:
    """Committed offset, log end and lag of one partition for a group.

    ``committed`` is -1 when the group has committed nothing for the partition
    (``lag`` is then the whole ``log_end``); ``log_end`` is the partition's high
    watermark, -1 when its leader could not be asked (``lag`` is then -1 too).
    """

    committed: int
    log_end: int
    lag: int


@dataclass(frozen=True)
class GroupDescription:
    """Answer of :meth:`Admin.describe_group`.

    ``offsets`` covers every partition the group has committed an offset for or a
    member is assigned; ``group_epoch`` and ``assignor`` come from the coordinator.
    """

    group: str
    state: str
    members: list[MemberInfo]
    offsets: dict[tuple[str, int], OffsetInfo]
    group_epoch: int = 0
    assignor: str | None = None


@dataclass(frozen=True)
class ClientQuota:
    """One principal's byte-rate quotas (:meth:`Admin.list_quotas`); None = no bound.

    ``principal`` is ``User:NAME``, or ``<default>``: the quotas of every principal
    without a value of its own (per key).
    """

    principal: str
    produce_bytes_per_s: float | None = None
    fetch_bytes_per_s: float | None = None
