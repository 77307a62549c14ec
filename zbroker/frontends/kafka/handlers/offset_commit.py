"""OffsetCommit (key 8): commit a group's consumed positions.

``generation_id_or_member_epoch`` and ``member_id`` go to the coordinator as the
member's epoch: a classic member sends its generation, a KIP-848 member its member
epoch, and a consumer outside any group (``assign()``) generation -1 with an empty
member id, which the coordinator accepts only while the group has no members.

Partitions of topics that do not exist, or past a topic's last partition, are
UNKNOWN_TOPIC_OR_PARTITION, and metadata longer than :data:`MAX_METADATA_BYTES` is
OFFSET_METADATA_TOO_LARGE (Kafka's ``offset.metadata.max.bytes``), each on its own; the
other partitions are committed together and answered once replicated.  The commit needs
READ on the group (else GROUP_AUTHORIZATION_FAILED on every partition) and READ on each
topic (else TOPIC_AUTHORIZATION_FAILED on that topic's partitions).  An error of
the whole commit (NOT_COORDINATOR, STALE_MEMBER_EPOCH, ...) is set on every partition.
``committed_leader_epoch`` (v6+) is not kept: OffsetFetch answers -1 (unknown), so
clients skip their truncation check on it.  ``retention_time`` (v2-v4) is ignored:
committed offsets stay until the group is deleted.  v10 names topics by id.
"""

from __future__ import annotations

from zbroker.errors import ErrorCode
from zbroker.frontends.kafka import datapath, groupmap
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.groups.coordinator import CommitOffset, OffsetCommit
from zbroker.security import Operation, ResourceType, group

API_KEY = 8
VERSIONS = (2, 10)
MAX_METADATA_BYTES = 4096


def _topic_name(app, t, version: int) -> str | None:
    return datapath.topic_name(app, t.topic_id) if version >= 10 else t.name


def offset_commit(app, ctx, request, version, now_ms):
    image = app.control.image
    errors: dict[tuple, int] = {}  # (topic key, partition) -> error
    offsets = []
    for t in request.topics:
        name = _topic_name(app, t, version)
        meta = image.get(name) if name is not None else None
        denied = datapath.topic_refusal(ctx, Operation.READ, name)
        for p in t.partitions:
            key = (_key(t, version), p.partition_index)
            metadata = p.committed_metadata or ""
            if denied is not None:
                errors[key] = denied.code
            elif meta is None or not 0 <= p.partition_index < meta.partition_count:
                errors[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif len(metadata.encode()) > MAX_METADATA_BYTES:
                errors[key] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                offsets.append((key, CommitOffset(name, p.partition_index, p.committed_offset, metadata)))

    def build(result) -> dict:
        code = result.code if isinstance(result, Exception) else 0
        return _answer(request, version, {**{key: code for key, _o in offsets}, **errors})

    if not offsets:
        return build([])
    commit = OffsetCommit(request.group_id, [o for _key_, o in offsets], request.member_id or "",
                          request.generation_id_or_member_epoch, getattr(request, "group_instance_id", None))
    return groupmap.gather([groupmap.attempt(lambda: app.groups.offset_commit(ctx, commit, now_ms))],
                           lambda values: build(values[0]))


def _key(t, version: int):
    return t.topic_id if version >= 10 else t.name


def _answer(request, version: int, codes: dict) -> dict:
    field = "topic_id" if version >= 10 else "name"
    return {"topics": [{field: _key(t, version),
                        "partitions": [{"partition_index": p.partition_index,
                                        "error_code": codes.get((_key(t, version), p.partition_index), 0)}
                                       for p in t.partitions]}
                       for t in request.topics]}


def _error(request, version, code, message):
    if request is None:
        return {"topics": []}
    return _answer(request, version, {(_key(t, version), p.partition_index): code
                                      for t in request.topics for p in t.partitions})


def _access(request):
    return [(Operation.READ, group(request.group_id)), *datapath.topic_access(Operation.READ, request.topics, "name")]


ROUTE = KafkaRoute(API_KEY, "OffsetCommit", VERSIONS, offset_commit, error=_error, access=_access,
                   per_resource=frozenset({ResourceType.TOPIC}))
