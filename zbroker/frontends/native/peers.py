"""Broker-to-broker messages out, over the native protocol: the one table of calls in flight.

Services hand typed messages to :class:`PeerLink` (it implements
:class:`zbroker.context.PeerChannel`): follower fetches, admin requests forwarded to the
controller, ISR changes, the offsets topic's creation, Raft messages, and the produces,
offset look-ups and commits a bridge's gateway (:mod:`zbroker.frontends.bridge.gateway`)
hands to partition leaders and group coordinators.  The link
encodes each as a native request, gives the calls that expect an answer a correlation
id in its one table, and hands ``(broker id, frames)`` to ``send`` (the broker's DEALER
to that peer's inter-broker listener, ``peer_port``: a CURVE connection made with this
broker's key, so the peer knows who sends, :mod:`zbroker.net.curve_keys`).  An answer arriving on a DEALER (:meth:`PeerLink.on_reply`) is decoded
to the typed result its call expects and passed to the call's callback; a call not
answered by its deadline gets REQUEST_TIMED_OUT (:meth:`PeerLink.expire`).  One-way
messages (Raft, auto-creation) carry correlation id 0; answers to them are dropped.
"""

from __future__ import annotations

import heapq
import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable

from zbroker import protocol as P
from zbroker.context import TIMED_OUT, PeerReply
from zbroker.control.controlplane import RaftMessage
from zbroker.control.topicadmin import (
    AlterIsr,
    AlterSecurity,
    AlterTopicConfig,
    CreateInternalTopic,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    InitProducerId,
    ProducerId,
)
from zbroker.core.fetch import FetchRequest, ListOffsets, OffsetAnswer
from zbroker.core.produce import ProduceRequest, ProduceResult
from zbroker.errors import ErrorCode
from zbroker.frontends.native.handlers.data import fetch_fields, fetch_result
from zbroker.groups.coordinator import CommittedOffset, OffsetCommit, OffsetFetch

log = logging.getLogger(__name__)

Frames = list[bytes]


def _no_value(header: dict, payloads: Frames) -> None:
    return None


def _producer_id(header: dict, payloads: Frames) -> ProducerId:
    return ProducerId(header.get("producer_id", -1), header.get("producer_epoch", 0))


def _produce_fields(req: ProduceRequest) -> tuple[dict, Frames]:
    return ({"acks": req.acks, "timeout_ms": req.timeout_ms,
             "batches": [{"topic": t, "partition": p} for t, p, _ in req.batches]}, [b for _, _, b in req.batches])


def _produce_results(header: dict, payloads: Frames) -> list[ProduceResult]:
    return [ProduceResult(r["topic"], r["partition"], r.get("error", 0), r.get("error_message"), r.get("base_offset", -1),
                          r.get("log_append_time", -1), r.get("log_start_offset", -1)) for r in header["results"]]


def _list_offsets_fields(req: ListOffsets) -> dict:
    return {"partitions": [{"topic": q.topic, "partition": q.partition, "timestamp": q.timestamp} for q in req.queries]}


def _offset_answers(header: dict, payloads: Frames) -> list[OffsetAnswer]:
    return [OffsetAnswer(a["topic"], a["partition"], a.get("error", 0), a.get("offset", -1), a.get("timestamp", -1))
            for a in header["partitions"]]


def _commit_fields(req: OffsetCommit) -> dict:
    return {"group": req.group, "member_id": req.member_id, "member_epoch": req.member_epoch,
            "offsets": [{"topic": o.topic, "partition": o.partition, "offset": o.offset, "metadata": o.metadata}
                        for o in req.offsets]}


def _offset_fetch_fields(req: OffsetFetch) -> dict:
    return {"group": req.group, "partitions": None if req.partitions is None else [list(tp) for tp in req.partitions]}


def _committed(header: dict, payloads: Frames) -> list[CommittedOffset]:
    return [CommittedOffset(o["topic"], o["partition"], o.get("offset", -1), o.get("metadata", "")) for o in header["offsets"]]


#: message type -> (request type, its wire fields (or fields and payload frames), how to decode the answer)
_CODECS: dict[type, tuple[str, Callable[[Any], dict | tuple[dict, Frames]], Callable[[dict, Frames], Any]]] = {
    FetchRequest: (P.FETCH, fetch_fields, fetch_result),
    CreateTopic: (P.CREATE_TOPIC, asdict, _no_value),
    DeleteTopic: (P.DELETE_TOPIC, asdict, _no_value),
    AlterTopicConfig: (P.ALTER_TOPIC_CONFIG, asdict, _no_value),
    CreatePartitions: (P.CREATE_PARTITIONS, asdict, _no_value),
    InitProducerId: (P.INIT_PRODUCER_ID, asdict, _producer_id),
    AlterIsr: (P.ALTER_ISR, asdict, _no_value),
    CreateInternalTopic: (P.CREATE_INTERNAL_TOPIC, asdict, _no_value),
    AlterSecurity: (P.ALTER_SECURITY, asdict, _no_value),
    # the requests a bridge's gateway hands to partition leaders and group coordinators
    ProduceRequest: (P.PRODUCE, _produce_fields, _produce_results),
    ListOffsets: (P.LIST_OFFSETS, _list_offsets_fields, _offset_answers),
    OffsetCommit: (P.OFFSET_COMMIT, _commit_fields, _no_value),
    OffsetFetch: (P.OFFSET_FETCH, _offset_fetch_fields, _committed),
}


@dataclass
class _Call:
    broker_id: int
    kind: str
    decode: Callable[[dict, Frames], Any]
    on_reply: Callable[[PeerReply, int], None]
    deadline_ms: int


class PeerLink:
    """The native encoding of broker-to-broker traffic, with one correlation table."""

    def __init__(self, send: Callable[[int, Frames], None]) -> None:
        self._send = send
        self._calls: dict[int, _Call] = {}
        self._deadlines: list[tuple[int, int]] = []  # (deadline, cid), lazily pruned
        self._cid = 0

    def __len__(self) -> int:
        return len(self._calls)

    def connect(self, send: Callable[[int, Frames], None]) -> None:
        """Send through ``send(broker id, frames)`` from now on."""
        self._send = send

    def send(self, broker_id: int, message: Any) -> None:
        self._send(broker_id, self._encode(message, 0))

    def call(self, broker_id: int, message: Any, on_reply: Callable[[PeerReply, int], None], timeout_ms: int,
             now_ms: int) -> None:
        self._cid += 1
        cid = self._cid
        kind, _fields, decode = _CODECS[type(message)]
        self._calls[cid] = _Call(broker_id, kind, decode, on_reply, now_ms + timeout_ms)
        heapq.heappush(self._deadlines, (now_ms + timeout_ms, cid))
        self._send(broker_id, self._encode(message, cid))

    @staticmethod
    def _encode(message: Any, cid: int) -> Frames:
        if isinstance(message, RaftMessage):
            header = {"v": P.PROTOCOL_VERSION, "cid": cid, **message.fields}
            return [P.encode(header), *([message.payload] if message.payload else [])]
        kind, encode, _decode = _CODECS[type(message)]
        fields = encode(message)
        fields, payloads = fields if isinstance(fields, tuple) else (fields, [])
        return [P.encode(P.request(kind, cid, **fields)), *payloads]

    def on_reply(self, frames: Frames, now_ms: int) -> None:
        """An answer on one of the broker's DEALERs."""
        try:
            header = P.decode_header(frames[0])
        except P.UndecodableFrame as exc:
            log.warning("dropped an undecodable reply from a peer: %s", exc)
            return
        call = self._calls.pop(header["cid"], None)
        if call is None:
            return  # timed out already, or a one-way message's answer
        error = header.get("error", 0)
        if not isinstance(error, int):
            error = int(ErrorCode.UNKNOWN_SERVER_ERROR)
        value = None
        if not error:
            try:
                value = call.decode(header, frames[1:])
            except Exception as exc:  # a peer's malformed answer fails this call only
                log.warning("malformed %s answer from broker %s: %r", call.kind, call.broker_id, exc)
                error = int(ErrorCode.UNKNOWN_SERVER_ERROR)
        message = header.get("error_message")
        call.on_reply(PeerReply(error, message if isinstance(message, str) else None, value), now_ms)

    def expire(self, now_ms: int) -> None:
        """Time out the calls past their deadline."""
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, cid = heapq.heappop(self._deadlines)
            call = self._calls.pop(cid, None)
            if call is not None:
                call.on_reply(PeerReply(int(ErrorCode.REQUEST_TIMED_OUT), f"broker {call.broker_id} did not answer in time",
                                        TIMED_OUT), now_ms)

    def next_deadline(self) -> int | None:
        while self._deadlines and self._deadlines[0][1] not in self._calls:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None
