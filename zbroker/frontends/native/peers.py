"""Broker-to-broker messages out, over the native protocol: the one table of calls in flight.

Services hand typed messages to :class:`PeerLink` (it implements
:class:`zbroker.context.PeerChannel`): follower fetches, admin requests forwarded to the
controller, ISR changes, the offsets topic's creation and Raft messages.  The link
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
from zbroker.core.fetch import FetchRequest
from zbroker.errors import ErrorCode
from zbroker.frontends.native.handlers.data import fetch_fields, fetch_result

log = logging.getLogger(__name__)

Frames = list[bytes]


def _no_value(header: dict, payloads: Frames) -> None:
    return None


def _producer_id(header: dict, payloads: Frames) -> ProducerId:
    return ProducerId(header.get("producer_id", -1), header.get("producer_epoch", 0))


#: message type -> (request type, its wire fields, how to decode the answer)
_CODECS: dict[type, tuple[str, Callable[[Any], dict], Callable[[dict, Frames], Any]]] = {
    FetchRequest: (P.FETCH, fetch_fields, fetch_result),
    CreateTopic: (P.CREATE_TOPIC, asdict, _no_value),
    DeleteTopic: (P.DELETE_TOPIC, asdict, _no_value),
    AlterTopicConfig: (P.ALTER_TOPIC_CONFIG, asdict, _no_value),
    CreatePartitions: (P.CREATE_PARTITIONS, asdict, _no_value),
    InitProducerId: (P.INIT_PRODUCER_ID, asdict, _producer_id),
    AlterIsr: (P.ALTER_ISR, asdict, _no_value),
    CreateInternalTopic: (P.CREATE_INTERNAL_TOPIC, asdict, _no_value),
    AlterSecurity: (P.ALTER_SECURITY, asdict, _no_value),
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
        kind, fields, _decode = _CODECS[type(message)]
        return [P.encode(P.request(kind, cid, **fields(message)))]

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
