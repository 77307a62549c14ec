"""Fetch (key 1): consumers' reads, as a long poll on append.

Every partition is read by :meth:`FetchService.fetch`: whole stored batches below the
high watermark, starting with the batch that holds the fetch offset (a fetch offset
inside a batch gets the whole batch), at least one batch even above ``max_bytes``,
``partition_max_bytes`` per partition.  With less than ``min_bytes`` at hand the fetch is
parked on its partitions until an append to one of them brings enough, or ``max_wait``
passes -- never a polling loop.  Native batches (magic 122) go out converted to Kafka
RecordBatch v2 (:func:`storage.convert.to_kafka_batches`), at most
:data:`CONVERT_BYTES` of them per partition and fetch (at least one batch): conversion is
Python work on the broker's one loop, and a consumer asking for megabytes of small native
records would hold every other client up while they were converted (up to 234 ms with 10 MB
a partition); it gets the rest on its next fetch.  Kafka batches go out as stored.

Each partition answers its ``high_watermark``, ``last_stable_offset`` (= the high
watermark: there are no transactions), ``log_start_offset``, ``preferred_read_replica``
-1 and no aborted transactions (null; an empty list for ``read_committed``).  A
``current_leader_epoch`` other than this leader's gets FENCED_LEADER_EPOCH or
UNKNOWN_LEADER_EPOCH; NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH name the current
leader (v12+, KIP-951).  v13+ names topics by id (UNKNOWN_TOPIC_ID for one no topic has).

Fetch sessions (KIP-227, v7+) are not kept: every answer has ``session_id`` 0, which
tells the client the broker holds no session, so its next fetch is a full one again
(what a Kafka broker with ``max.incremental.fetch.session.cache.slots=0`` answers;
librdkafka never opens sessions, kafka-python's session handler falls back to full
fetches).  ``forgotten_topics_data`` only matters inside a session and is ignored.

Every Kafka fetch is a consumer's: followers replicate through the native door, so a
``replica_id`` here never moves a high watermark.

Quotas: the record bytes answered count against the principal's fetch quota; the answer
carries its ``throttle_time_ms`` and the connection is then muted that long (the router).
A fetch by a principal already over its quota is answered without records, which are not
counted (as a Kafka broker does); the fetch that takes it over its quota keeps them.
"""

from __future__ import annotations

from storage import CorruptBatchError
from storage.convert import to_kafka_batches
from zbroker.core.fetch import FetchedPartition, FetchPartition, FetchRequest, FetchResult
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.codec import millis
from zbroker.frontends.kafka.datapath import (
    LEADER_MOVED, leader_endpoints, leader_hint, max_decompressed, then, topic_access, topic_name, topic_refusal,
)
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType
from zbroker.security.quotas import FETCH

API_KEY = 1
VERSIONS = (4, 18)
TOPIC_IDS_FROM = 13  # v13+: topics by id (KIP-516)
READ_COMMITTED = 1
#: Native bytes converted per partition and fetch, at most (after the first batch):
#: ~1 MiB of 100-byte records is ~9,000 records, ~4 ms of the loop.
CONVERT_BYTES = 1 << 20


def fetch(app, ctx, request, version, now_ms):
    specs: list[FetchPartition] = []
    topics = []  # (name, topic id, [partition index, position in specs or a refused FetchedPartition])
    refused = False
    for t in request.topics:
        topic_id = getattr(t, "topic_id", None)
        name = topic_name(app, topic_id) if version >= TOPIC_IDS_FROM else t.topic
        slots = []
        denied = topic_refusal(ctx, Operation.READ, name)
        for p in t.partitions:
            if name is None or denied is not None:
                error = ErrorCode.UNKNOWN_TOPIC_ID if name is None else denied.code
                slots.append((p.partition, FetchedPartition(name or "", p.partition, error=int(error))))
                refused = True
                continue
            slots.append((p.partition, len(specs)))
            specs.append(FetchPartition(name, p.partition, p.fetch_offset, p.partition_max_bytes,
                                        getattr(p, "current_leader_epoch", -1)))
        topics.append((name, topic_id, slots))
    # a partition refused here ends the long poll at once, as any partition error does
    max_wait = 0 if refused else millis(request.max_wait)
    req = FetchRequest(specs, max_wait, request.min_bytes, request.max_bytes, replica_id=-1)
    committed = getattr(request, "isolation_level", 0) == READ_COMMITTED
    return then(app.fetch.fetch(ctx, req, now_ms), lambda result: _response(app, topics, result, committed))


def _records(app, p: FetchedPartition) -> tuple[int, bytes]:
    """``(error, Kafka v2 batches)`` of one partition's read."""
    if not p.data:
        return p.error, b""
    try:
        return p.error, to_kafka_batches(p.data, max_decompressed(app, p.topic), CONVERT_BYTES)
    except CorruptBatchError:  # logged by the conversion; the consumer is told, as for a damaged read
        return int(ErrorCode.CORRUPT_MESSAGE), b""


def _response(app, topics, result: FetchResult, committed: bool) -> dict:
    responses, hints = [], []
    for name, topic_id, slots in topics:
        partitions = []
        for index, slot in slots:
            p = result.partitions[slot] if isinstance(slot, int) else slot
            error, records = _records(app, p)
            entry = {"partition_index": index, "error_code": error, "high_watermark": p.high_watermark,
                     "last_stable_offset": p.high_watermark, "log_start_offset": p.log_start_offset,
                     "aborted_transactions": [] if committed else None, "preferred_read_replica": -1,
                     "records": bytes(records)}
            hint = leader_hint(app, name, index) if error in LEADER_MOVED else None
            if hint is not None:
                entry["current_leader"] = hint
                hints.append(hint)
            partitions.append(entry)
        responses.append({"topic": name, "topic_id": topic_id, "partitions": partitions})
    return {"error_code": 0, "session_id": 0, "responses": responses,
            "node_endpoints": leader_endpoints(app, hints) if hints else []}


def _error(request, version, code, message):
    """Every partition of the request answered with ``code`` (and the top-level error, v7+)."""
    return {"error_code": code, "session_id": 0,
            "responses": [{"topic": getattr(t, "topic", None), "topic_id": getattr(t, "topic_id", None),
                           "partitions": [{"partition_index": p.partition, "error_code": code, "high_watermark": -1,
                                           "last_stable_offset": -1, "log_start_offset": -1, "preferred_read_replica": -1,
                                           "records": b""} for p in t.partitions]}
                          for t in request.topics]}


def _answered_bytes(_request, answer: dict) -> int:
    """What a fetch counts against its principal's quota: the record bytes it answers."""
    return sum(len(p.get("records") or b"") for t in answer.get("responses", ()) for p in t["partitions"])


def _without_records(answer: dict) -> None:
    """The answer of a principal over its fetch quota: no records (the offsets stay)."""
    for t in answer.get("responses", ()):
        for p in t["partitions"]:
            p["records"] = b""


ROUTE = KafkaRoute(API_KEY, "Fetch", VERSIONS, fetch, error=_error,
                   access=lambda request: topic_access(Operation.READ, request.topics, "topic"),
                   per_resource=frozenset({ResourceType.TOPIC}),
                   quota=FETCH, quota_bytes=_answered_bytes, quota_empty=_without_records)
