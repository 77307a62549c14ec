"""produce, fetch, list_offsets."""

from __future__ import annotations

from zbroker import protocol as P
from zbroker.core.fetch import FetchPartition, FetchRequest, FetchResult, FetchedPartition, OffsetQuery
from zbroker.core.produce import ProduceResult, check_acks
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.native.router import NO_REPLY, Route
from zbroker.security import CLUSTER, Operation, topic
from zbroker.security.quotas import FETCH, PRODUCE


# -- produce -------------------------------------------------------------------------

def produce(app, ctx, fields, payloads, now_ms):
    specs = fields["batches"]
    check_acks(fields["acks"])
    if len(specs) != len(payloads):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"'batches' lists {len(specs)} batches but {len(payloads)} payload frames came")
    batches = [(spec["topic"], spec["partition"], frame) for spec, frame in zip(specs, payloads)]
    answer = app.produce.produce(ctx, fields["acks"], fields["timeout_ms"], batches, now_ms)
    return NO_REPLY if answer is None else answer


def _produce_entry(r: ProduceResult) -> dict:
    entry = {"topic": r.topic, "partition": r.partition, "error": r.error, "base_offset": r.base_offset,
             "log_append_time": r.log_append_time, "log_start_offset": r.log_start_offset}
    if r.error_message:
        entry["error_message"] = r.error_message
    return entry


def produce_reply(results: list[ProduceResult]):
    return {"results": [_produce_entry(r) for r in results]}, []


# -- fetch ---------------------------------------------------------------------------

def fetch_request(fields: dict) -> FetchRequest:
    parts = [FetchPartition(s["topic"], s["partition"], s["offset"], s["max_bytes"], s["leader_epoch"], s["last_fetched_epoch"])
             for s in fields["partitions"]]
    return FetchRequest(parts, fields["max_wait_ms"], fields["min_bytes"], fields["max_bytes"], fields["replica_id"])


def fetch_fields(req: FetchRequest) -> dict:
    """The wire fields of a fetch request (follower fetches sent to other brokers)."""
    return {"replica_id": req.replica_id, "max_wait_ms": req.max_wait_ms, "min_bytes": req.min_bytes,
            "max_bytes": req.max_bytes,
            "partitions": [{"topic": p.topic, "partition": p.partition, "offset": p.offset, "leader_epoch": p.leader_epoch,
                            "last_fetched_epoch": p.last_fetched_epoch, "max_bytes": p.max_bytes} for p in req.partitions]}


def fetch(app, ctx, fields, payloads, now_ms):
    return app.fetch.fetch(ctx, fetch_request(fields), now_ms)


def fetch_reply(result: FetchResult):
    entries, payloads = [], []
    for p in result.partitions:
        entry = {"topic": p.topic, "partition": p.partition, "error": p.error, "high_watermark": p.high_watermark,
                 "log_start_offset": p.log_start_offset}
        if p.diverging is not None:
            entry["diverging"] = p.diverging
        if p.damaged is not None:
            entry["damaged"] = p.damaged
        entries.append(entry)
        payloads.append(p.data)
    return {"partitions": entries}, payloads


def fetch_result(header: dict, payloads: list[bytes]) -> FetchResult:
    """Decode a fetch answer from another broker (a follower's fetch)."""
    out = FetchResult()
    for i, entry in enumerate(header.get("partitions") or ()):
        if not isinstance(entry, dict):
            continue
        diverging, damaged = entry.get("diverging"), entry.get("damaged")
        out.partitions.append(FetchedPartition(
            entry.get("topic"), entry.get("partition"), entry.get("error", 0), entry.get("high_watermark", 0),
            entry.get("log_start_offset", -1), list(diverging) if diverging else None,
            payloads[i] if i < len(payloads) else b"",
            list(damaged) if isinstance(damaged, (list, tuple)) and len(damaged) == 2 else None))
    return out


def _fetch_access(fields):
    if fields["replica_id"] >= 0:
        return [(Operation.CLUSTER_ACTION, CLUSTER)]
    return [(Operation.READ, topic(name)) for name in {s["topic"] for s in fields["partitions"]}]


# -- list_offsets --------------------------------------------------------------------

def list_offsets(app, ctx, fields, payloads, now_ms):
    return app.fetch.list_offsets(ctx, [OffsetQuery(s["topic"], s["partition"], s["timestamp"]) for s in fields["partitions"]])


def list_offsets_reply(answers):
    return {"partitions": [{"topic": a.topic, "partition": a.partition, "error": a.error, "offset": a.offset,
                            "timestamp": a.timestamp} for a in answers]}, []


def _follower(fields) -> int | None:
    return fields["replica_id"] if fields["replica_id"] >= 0 else None


ROUTES = [
    Route(P.PRODUCE, produce, produce_reply,
          access=lambda f: [(Operation.WRITE, topic(name)) for name in {b["topic"] for b in f["batches"]}], quota=PRODUCE),
    # a follower's fetch (replica_id >= 0) must come from that broker; consumers' from anyone
    Route(P.FETCH, fetch, fetch_reply, access=_fetch_access, sender=_follower, quota=FETCH),
    Route(P.LIST_OFFSETS, list_offsets, list_offsets_reply,
          access=lambda f: [(Operation.DESCRIBE, topic(name)) for name in {s["topic"] for s in f["partitions"]}]),
]
