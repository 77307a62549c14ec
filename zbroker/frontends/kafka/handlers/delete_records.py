"""DeleteRecords (key 21): move partitions' log starts up, on their leaders.

Each ``(partition, offset)`` goes to :meth:`zbroker.core.delete_records.DeleteRecordsService.delete_records`
(offset -1: up to the high watermark).  The answer per partition is the new
``low_watermark`` (the leader's log start) or the service's error: NOT_LEADER_OR_FOLLOWER
on a broker that does not lead it (Kafka clients send each partition to its leader),
POLICY_VIOLATION for a topic without the delete cleanup policy, OFFSET_OUT_OF_RANGE
past the high watermark, INVALID_TOPIC_EXCEPTION for ``__consumer_offsets``.  The leader
answers once it applied the new start durably, without waiting for followers (see the
service); the request's ``timeout`` is not used.
"""

from __future__ import annotations

from zbroker.frontends.kafka.codec import millis
from zbroker.frontends.kafka.datapath import topic_refusal
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, topic

API_KEY = 21
VERSIONS = (0, 2)


def delete_records(app, ctx, request, version, now_ms):
    denied = {t.name: error for t in request.topics if (error := topic_refusal(ctx, Operation.DELETE, t.name)) is not None}
    asked = [(t.name, p.partition_index, p.offset) for t in request.topics if t.name not in denied for p in t.partitions]
    results = iter(app.delete_records.delete_records(ctx, asked, millis(request.timeout), now_ms))
    topics: dict[str, list[dict]] = {}
    for t in request.topics:
        for p in t.partitions:
            if t.name in denied:
                entry = {"partition_index": p.partition_index, "low_watermark": -1, "error_code": denied[t.name].code}
            else:
                r = next(results)
                entry = {"partition_index": r.partition, "low_watermark": r.low_watermark, "error_code": r.error}
            topics.setdefault(t.name, []).append(entry)
    return {"topics": [{"name": name, "partitions": parts} for name, parts in topics.items()]}


def _error(request, version, code, message):
    return {"topics": [{"name": t.name, "partitions": [{"partition_index": p.partition_index, "low_watermark": -1,
                                                        "error_code": code} for p in t.partitions]}
                       for t in ([] if request is None else request.topics)]}


def _access(request):
    return [(Operation.DELETE, topic(t.name)) for t in request.topics]


ROUTE = KafkaRoute(API_KEY, "DeleteRecords", VERSIONS, delete_records, error=_error, access=_access,
                   per_resource=frozenset({ResourceType.TOPIC}))
