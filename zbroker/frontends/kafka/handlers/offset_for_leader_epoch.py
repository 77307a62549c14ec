"""OffsetForLeaderEpoch (key 23): where a leader epoch ends in the leader's log (KIP-320).

A consumer asks after a leader change, with the epoch of the last record it consumed:
an end offset below its position means the log it read from was truncated there, and it
resets.  The answer is the one a follower's fetch gets when it checks for divergence
(:func:`zbroker.core.epochs.epoch_end`): the largest epoch <= the asked one and where it
ends (the log end for the current epoch); -1/-1 for an epoch newer than any here.
librdkafka asks exactly v2; v3+ adds ``replica_id`` (followers use the native door, so
every request here is answered as a consumer's).
"""

from __future__ import annotations

from zbroker.core.fetch import EpochAnswer, EpochQuery
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.datapath import partition_errors, topic_access, topic_refusal
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType

API_KEY = 23
VERSIONS = (2, 4)


def offset_for_leader_epoch(app, ctx, request, version, now_ms):
    denied = {t.topic for t in request.topics if topic_refusal(ctx, Operation.DESCRIBE, t.topic) is not None}
    queries = [EpochQuery(t.topic, p.partition, p.leader_epoch, p.current_leader_epoch)
               for t in request.topics if t.topic not in denied for p in t.partitions]
    answers = iter(app.fetch.offsets_for_leader_epoch(ctx, queries))
    refused = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    return {"topics": [{"topic": t.topic,
                        "partitions": [{"partition": a.partition, "error_code": a.error, "leader_epoch": a.leader_epoch,
                                        "end_offset": a.end_offset}
                                       for a in (next(answers) if t.topic not in denied else EpochAnswer(t.topic, p.partition, refused)
                                                 for p in t.partitions)]}
                       for t in request.topics]}


ROUTE = KafkaRoute(API_KEY, "OffsetForLeaderEpoch", VERSIONS, offset_for_leader_epoch,
                   error=lambda request, version, code, message: {
                       "topics": partition_errors(request.topics, "topic", "partition", code)},
                   access=lambda request: topic_access(Operation.DESCRIBE, request.topics, "topic"),
                   per_resource=frozenset({ResourceType.TOPIC}))
