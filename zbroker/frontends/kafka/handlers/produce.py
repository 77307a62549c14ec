"""Produce (key 0): Kafka RecordBatch v2 bytes, stored as sent.

Each partition's ``records`` is handed to :meth:`ProduceService.produce` as it came:
the service checks framing, CRC (CORRUPT_MESSAGE), the codec and the producer's
sequence (idempotent producers: a resent batch is acknowledged with its first offset,
not written twice), and appends it; records are never decoded here.  Before that the
door keeps Kafka's rules for Produce v3+ (``ProduceRequest.validateRecords``): exactly one
batch per partition, magic 2 (INVALID_RECORD otherwise).

``acks=0`` gets no answer at all; when a partition fails, the connection is closed once
the replies before it are written (Kafka's broker does the same: the producer, which reads
no answer, learns from the dropped connection and refreshes its metadata).  Errors are per partition: UNKNOWN_TOPIC_OR_PARTITION,
NOT_LEADER_OR_FOLLOWER (v10+ also names the current leader and its address, KIP-951),
CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, NOT_ENOUGH_REPLICAS, ... with ``error_message``
(v8+).  ``log_append_time`` is always -1: every topic uses CreateTime.  v13 names topics
by id (UNKNOWN_TOPIC_ID for an id no topic has).

Quotas: the record batches' bytes count against the principal's produce quota; the
answer's ``throttle_time_ms`` says how long the connection is then muted (the router).

Transactions are not supported: a request with a ``transactional_id``, or a batch with the
transactional bit, is refused with INVALID_TXN_STATE (48) and the message "transactions are
not supported by zbroker".  Every Kafka client treats that code as non-retriable (the Java
client and kafka-python fail the batch; librdkafka's default action for it is permanent),
and unlike TRANSACTIONAL_ID_AUTHORIZATION_FAILED it does not send the user looking for an
ACL that would help.  A transactional producer never gets this far in practice:
InitProducerId with a transactional id is refused first (``init_producer_id.py``).
"""

from __future__ import annotations

from storage import HEADER_SIZE, MAGIC_KAFKA, TRANSACTIONAL_BIT, parse_header
from zbroker.core.produce import ProduceResult, check_acks
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.codec import millis
from zbroker.frontends.kafka.datapath import LEADER_MOVED, leader_endpoints, leader_hint, then, topic_access, topic_name, topic_refusal
from zbroker.frontends.kafka.router import CLOSE_CONNECTION, NO_REPLY, KafkaRoute
from zbroker.security import Operation, ResourceType
from zbroker.security.quotas import PRODUCE

API_KEY = 0
VERSIONS = (3, 13)
TOPIC_IDS_FROM = 13  # v13+: topics by id (KIP-516)
TRANSACTIONS_UNSUPPORTED = "transactions are not supported by zbroker"


def _refusal(records, transactional: bool) -> tuple[int, str] | None:
    """Why the door refuses one partition's records before the service sees them, or None."""
    if transactional:
        return ErrorCode.INVALID_TXN_STATE, TRANSACTIONS_UNSUPPORTED
    if not records:
        return ErrorCode.INVALID_RECORD, "a produce request must carry one record batch per partition"
    if len(records) < HEADER_SIZE:
        return None  # the service says CORRUPT_MESSAGE (a truncated batch)
    header = parse_header(records)
    if header.magic != MAGIC_KAFKA:
        return ErrorCode.INVALID_RECORD, f"Produce v3+ carries record batches of magic 2, not {header.magic}"
    if header.size < len(records):
        return ErrorCode.INVALID_RECORD, "Produce v3+ carries exactly one record batch per partition"
    if header.attributes & TRANSACTIONAL_BIT:
        return ErrorCode.INVALID_TXN_STATE, TRANSACTIONS_UNSUPPORTED
    return None


def produce(app, ctx, request, version, now_ms):
    check_acks(request.acks)
    transactional = request.transactional_id is not None
    batches: list[tuple[str, int, bytes]] = []
    # per topic: (name or None, its id or None, [(partition, refusal ProduceResult, or the batch's position)])
    topics = []
    for t in request.topic_data:
        topic_id = getattr(t, "topic_id", None)
        name = topic_name(app, topic_id) if version >= TOPIC_IDS_FROM else t.name
        slots = []
        denied = topic_refusal(ctx, Operation.WRITE, name)
        for p in t.partition_data:
            if name is None:
                why = (ErrorCode.UNKNOWN_TOPIC_ID, f"no topic has id {topic_id}")
            elif denied is not None:
                why = (denied.code, denied.message)
            else:
                why = _refusal(p.records, transactional)
            if why is not None:
                result = ProduceResult(name or "", p.index)
                result.fail(*why)
                slots.append((p.index, result))
            else:
                slots.append((p.index, len(batches)))
                batches.append((name, p.index, p.records))
        topics.append((name, topic_id, slots))
    if request.acks == 0:
        # appended as for acks=1 (no wait either way), so the door sees the outcome: a
        # failure closes the connection, as Kafka's broker does (see CLOSE_CONNECTION)
        results = app.produce.produce(ctx, 1, millis(request.timeout), batches, now_ms)
        failed = any(r.error for r in results) or any(not isinstance(slot, int) for _, _, slots in topics for _, slot in slots)
        return CLOSE_CONNECTION if failed else NO_REPLY
    answer = app.produce.produce(ctx, request.acks, millis(request.timeout), batches, now_ms)
    return then(answer, lambda results: _response(app, topics, results))


def _response(app, topics, results: list[ProduceResult]) -> dict:
    responses, hints = [], []
    for name, topic_id, slots in topics:
        partitions = []
        for index, slot in slots:
            r = results[slot] if isinstance(slot, int) else slot
            entry = {"index": index, "error_code": r.error, "base_offset": r.base_offset, "log_append_time": None,
                     "log_start_offset": r.log_start_offset, "record_errors": [], "error_message": r.error_message}
            hint = leader_hint(app, name, index) if r.error in LEADER_MOVED else None
            if hint is not None:
                entry["current_leader"] = hint
                hints.append(hint)
            partitions.append(entry)
        responses.append({"name": name, "topic_id": topic_id, "partition_responses": partitions})
    return {"responses": responses, "node_endpoints": leader_endpoints(app, hints) if hints else []}


def _error(request, version, code, message):
    """Every partition of the request refused with ``code``."""
    return {"responses": [{"name": getattr(t, "name", None), "topic_id": getattr(t, "topic_id", None),
                           "partition_responses": [{"index": p.index, "error_code": code, "base_offset": -1, "log_append_time": None,
                                                    "record_errors": [], "error_message": message} for p in t.partition_data]}
                          for t in request.topic_data]}


def _record_bytes(request, _answer) -> int:
    """What a produce counts against its principal's quota: the record batches' bytes."""
    return sum(len(p.records or b"") for t in request.topic_data for p in t.partition_data)


ROUTE = KafkaRoute(API_KEY, "Produce", VERSIONS, produce, error=_error,
                   access=lambda request: topic_access(Operation.WRITE, request.topic_data, "name"),
                   per_resource=frozenset({ResourceType.TOPIC}),
                   quota=PRODUCE, quota_bytes=_record_bytes)
