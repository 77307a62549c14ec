"""ListOffsets (key 2): offsets by time, on each partition's leader.

Timestamps, as Kafka names them: -1 latest (the high watermark, which is also the last
stable offset: there are no transactions), -2 earliest (the log start), -3 the record with
the largest timestamp (KIP-734; cheap: each segment keeps its largest timestamp; for a
Kafka batch the answer is the batch's base offset), -4 earliest local (= earliest: there
is no tiered storage), -5 latest tiered and any other negative value: offset -1 (nothing
is tiered), a time in ms: the first record at or after it.  Each answer names the leader
epoch that wrote its offset (v4+); a ``current_leader_epoch`` other than the leader's
gets FENCED_LEADER_EPOCH or UNKNOWN_LEADER_EPOCH.
"""

from __future__ import annotations

from zbroker.core.fetch import EARLIEST_TIMESTAMP, MAX_TIMESTAMP, OffsetAnswer, OffsetQuery
from zbroker.frontends.kafka.datapath import partition_errors, topic_access, topic_refusal
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType

API_KEY = 2
VERSIONS = (1, 11)
EARLIEST_LOCAL_TIMESTAMP = -4


def list_offsets(app, ctx, request, version, now_ms):
    # slots: per topic, per partition: a position in queries, an answer already (refused) or None (nothing to ask)
    queries, slots = [], []
    for t in request.topics:
        positions = []
        denied = topic_refusal(ctx, Operation.DESCRIBE, t.name)
        for p in t.partitions:
            if denied is not None:
                positions.append(OffsetAnswer(t.name, p.partition_index, denied.code))
                continue
            timestamp = EARLIEST_TIMESTAMP if p.timestamp == EARLIEST_LOCAL_TIMESTAMP else p.timestamp
            if timestamp < MAX_TIMESTAMP:  # latest tiered and what Kafka may add: nothing is tiered here
                positions.append(None)
                continue
            positions.append(len(queries))
            queries.append(OffsetQuery(t.name, p.partition_index, timestamp, getattr(p, "current_leader_epoch", -1)))
        slots.append(positions)
    answers = app.fetch.list_offsets(ctx, queries)
    topics = []
    for t, positions in zip(request.topics, slots):
        partitions = []
        for p, i in zip(t.partitions, positions):
            a = answers[i] if isinstance(i, int) else i or OffsetAnswer(t.name, p.partition_index)
            partitions.append({"partition_index": p.partition_index, "error_code": a.error, "timestamp": a.timestamp,
                               "offset": a.offset, "leader_epoch": a.leader_epoch})
        topics.append({"name": t.name, "partitions": partitions})
    return {"topics": topics}


ROUTE = KafkaRoute(API_KEY, "ListOffsets", VERSIONS, list_offsets,
                   error=lambda request, version, code, message: {
                       "topics": partition_errors(request.topics, "name", "partition_index", code)},
                   access=lambda request: topic_access(Operation.DESCRIBE, request.topics, "name"),
                   per_resource=frozenset({ResourceType.TOPIC}))
