"""The Kafka door's sans-IO parts: framing, reply order, the kio codec and the router."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, strategies as st
from kio.schema.metadata.v1.request import MetadataRequest as MetadataV1
from kio.schema.request_header.v1.header import RequestHeader as HeaderV1
from kio.serial import entity_reader, entity_writer

from zbroker.context import Completion
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import codec
from zbroker.frontends.kafka.framer import Framer, FrameTooLarge, ReplyOrder
from zbroker.frontends.kafka.handlers import api_versions
from zbroker.frontends.kafka.router import CLOSE_CONNECTION, MAX_IN_FLIGHT, NO_REPLY, KafkaConnection, KafkaRoute, KafkaRouter
from zbroker.metrics import RequestMetrics
from zbroker.security import AllowAll

pytestmark = pytest.mark.timeout(60)


def framed(*messages: bytes) -> bytes:
    return b"".join(struct.pack(">i", len(m)) + m for m in messages)


# -- framer ----------------------------------------------------------------------------

def test_requests_come_out_whole_however_the_bytes_arrive():
    messages = [b"a" * 5, b"", b"xyz" * 100]
    stream = framed(*messages)
    assert Framer(1000).feed(stream) == messages
    f = Framer(1000)
    got = []
    for i in range(len(stream)):
        got += f.feed(stream[i:i + 1])
    assert got == messages and f.buffered == 0
    f = Framer(1000)
    assert f.feed(stream + b"\0\0") == messages  # a partial size stays buffered
    assert f.buffered == 2


@given(st.lists(st.binary(max_size=50), max_size=10), st.integers(1, 20))
def test_any_split_gives_the_same_requests(messages, step):
    stream = framed(*messages)
    f = Framer(100)
    got = []
    for i in range(0, len(stream), step):
        got += f.feed(stream[i:i + step])
    assert got == messages


@pytest.mark.parametrize("size", [1001, -1, 2**31 - 1])
def test_a_size_above_the_limit_or_negative_is_refused_before_buffering(size):
    with pytest.raises(FrameTooLarge, match=str(size)):
        Framer(1000).feed(struct.pack(">i", size))


def test_replies_leave_in_request_order_and_no_reply_slots_are_skipped():
    order = ReplyOrder()
    a, b, c = order.reserve(), order.reserve(), order.reserve()
    order.fill(c, b"C")
    order.fill(b, None)  # an acks=0 produce
    assert order.ready() == [] and len(order) == 3
    order.fill(a, b"A")
    assert order.ready() == [b"A", b"C"] and len(order) == 0
    order.fill(a, b"late")  # a slot already released is ignored
    assert order.ready() == []


# -- codec -----------------------------------------------------------------------------

def test_build_drops_fields_the_version_lacks_and_zero_fills_the_rest():
    v0 = codec.response_schema(3, 0)
    body = codec.build(v0, {"brokers": [{"node_id": 1, "host": "h", "port": 9, "rack": "r"}], "cluster_id": "c",
                              "topics": [{"name": "t", "error_code": 3}]})
    assert body.brokers[0].port == 9 and body.topics[0].error_code.value == 3 and body.topics[0].partitions == ()
    v12 = codec.response_schema(3, 12)
    body = codec.build(v12, {"topics": [{"name": "t", "topic_id": "00" * 16, "partitions": []}], "throttle_time": 5})
    assert body.cluster_id is None and body.topics[0].topic_id.int == 0  # kio's default; the zero UUID


def test_response_headers_follow_flexibility_except_api_versions():
    v3 = codec.encode_response(18, 3, 7, {"api_keys": []})
    assert struct.unpack_from(">ii", v3) == (len(v3) - 4, 7)
    assert v3[8:10] == b"\0\0"  # error code right after the correlation id: response header v0
    v9 = codec.encode_response(3, 9, 8, {})
    assert v9[8] == 0  # response header v1: an empty tagged-field section
    v1 = codec.encode_response(3, 1, 9, {})
    assert struct.unpack_from(">i", v1, 8)[0] == 0  # v1 body starts with the broker count


def test_request_header_and_body_decode_as_kio_wrote_them():
    buf = io.BytesIO()
    entity_writer(HeaderV1)(buf, HeaderV1(request_api_key=3, request_api_version=1, correlation_id=42, client_id="me"))
    entity_writer(MetadataV1)(buf, MetadataV1(topics=None))
    frame = buf.getvalue()
    header = codec.decode_header(frame, flexible=False)
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (3, 1, 42, "me")
    assert codec.decode_body(MetadataV1, frame, header.size) == entity_reader(MetadataV1)(frame, header.size)[0]
    with pytest.raises(codec.MalformedRequest):
        codec.decode_header(frame[:9], flexible=False)
    with pytest.raises(codec.MalformedRequest, match="MetadataRequest v1"):
        codec.decode_body(MetadataV1, frame[:-2], header.size)


# -- router ----------------------------------------------------------------------------

class Wire:
    """A transport that records what the connection does."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data):
        self.sent += data

    def close(self):
        self.closed = True

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


def request(api_key: int, version: int, cid: int, body: bytes = b"", client_id: str | None = None) -> bytes:
    if client_id is None:
        return framed(struct.pack(">hhih", api_key, version, cid, -1) + body)
    name = client_id.encode()
    return framed(struct.pack(">hhih", api_key, version, cid, len(name)) + name + body)


def correlation_ids(sent: list[bytes]) -> list[int]:
    return [struct.unpack_from(">i", r, 4)[0] for r in sent]


@pytest.fixture
def parked():
    return []


@pytest.fixture
def conn(parked):
    def metadata(app, ctx, req, version, now_ms):
        if req.topics and req.topics[0].name == "later":
            done = Completion()
            parked.append(done)
            return done
        if req.topics and req.topics[0].name == "bad":
            raise RequestError(ErrorCode.INVALID_REQUEST, "bad topic")
        if req.topics and req.topics[0].name == "bug":
            raise ZeroDivisionError
        if req.topics and req.topics[0].name == "quiet":
            return NO_REPLY
        if req.topics and req.topics[0].name == "hangup":
            return CLOSE_CONNECTION
        return {"topics": [{"name": t.name} for t in req.topics or ()]}

    def error(req, version, code, message):
        return {"topics": [{"name": "error", "error_code": code}]}

    routes = [KafkaRoute(3, "Metadata", (1, 1), metadata, error=error)]
    routes.append(api_versions.route(routes))
    router = KafkaRouter(None, routes, AllowAll(), RequestMetrics())
    return KafkaConnection(router, 1, "peer", Wire(), max_request_bytes=10_000)


def metadata_v1(cid: int, name: str) -> bytes:
    buf = io.BytesIO()
    from kio.schema.metadata.v1.request import MetadataRequestTopic
    entity_writer(MetadataV1)(buf, MetadataV1(topics=(MetadataRequestTopic(name=name),)))
    return request(3, 1, cid, buf.getvalue())


def decoded(reply: bytes, version: int = 1):
    return entity_reader(codec.response_schema(3, version))(reply, 8)[0]


def test_unknown_keys_and_versions_get_an_error_and_the_connection_goes_on(conn):
    conn.data_received(request(999, 0, 1) + request(3, 7, 2) + metadata_v1(3, "t"), 0)
    assert correlation_ids(conn.transport.sent) == [1, 2, 3]
    assert [struct.unpack_from(">h", r, 8)[0] for r in conn.transport.sent[:2]] == [35, 35]
    assert decoded(conn.transport.sent[2]).topics[0].name == "t"
    assert not conn.transport.closed


def test_a_parked_answer_holds_back_later_replies_until_it_is_sent(conn, parked):
    conn.data_received(metadata_v1(1, "later") + metadata_v1(2, "t") + metadata_v1(3, "quiet") + metadata_v1(4, "u"), 0)
    assert conn.transport.sent == []
    parked[0].complete({"topics": [{"name": "done"}]})
    assert correlation_ids(conn.transport.sent) == [1, 2, 4]
    assert decoded(conn.transport.sent[0]).topics[0].name == "done"


def test_errors_become_the_routes_error_answer(conn, parked):
    conn.data_received(metadata_v1(1, "bad") + metadata_v1(2, "bug") + metadata_v1(3, "later"), 0)
    parked[0].fail(RequestError(ErrorCode.REQUEST_TIMED_OUT, "slow"))
    codes = [decoded(r).topics[0].error_code.value for r in conn.transport.sent]
    assert codes == [ErrorCode.INVALID_REQUEST, ErrorCode.UNKNOWN_SERVER_ERROR, ErrorCode.REQUEST_TIMED_OUT]


def test_a_body_that_does_not_decode_closes_the_connection(conn):
    conn.data_received(request(3, 1, 1, b"\0\0\0\x09"), 0)  # claims 9 topics, has none
    assert conn.transport.closed and conn.transport.sent == []


def test_too_many_requests_in_flight_pause_reading_until_replies_leave(conn, parked):
    conn.data_received(b"".join(metadata_v1(i, "later") for i in range(MAX_IN_FLIGHT)), 0)
    assert conn.transport.paused
    for done in parked:
        done.complete({"topics": []})
    assert not conn.transport.paused and len(conn.transport.sent) == MAX_IN_FLIGHT


def test_requests_pipelined_in_one_read_run_at_most_max_in_flight_at_once(conn, parked):
    # one read carrying many small requests (a hostile client sends thousands of fetches
    # in 40 KB and never reads): only MAX_IN_FLIGHT run; the rest wait, unread, in order
    n = 5 * MAX_IN_FLIGHT
    conn.data_received(b"".join(metadata_v1(i, "later") for i in range(n)), 0)
    assert len(parked) == MAX_IN_FLIGHT and conn.transport.paused
    done = 0
    while done < len(parked):
        parked[done].complete({"topics": []})
        done += 1
        assert len(parked) - done <= MAX_IN_FLIGHT
    assert len(parked) == n and not conn.transport.paused
    assert correlation_ids(conn.transport.sent) == list(range(n))


def test_no_request_runs_while_the_transport_output_is_backed_up(conn, parked):
    conn.pause_writing()
    conn.data_received(metadata_v1(1, "t") + metadata_v1(2, "t"), 0)
    assert conn.transport.sent == [] and conn.transport.paused
    conn.resume_writing()
    assert correlation_ids(conn.transport.sent) == [1, 2] and not conn.transport.paused


def test_close_connection_sends_the_replies_before_it_then_closes(conn, parked):
    conn.data_received(metadata_v1(1, "later") + metadata_v1(2, "t") + metadata_v1(3, "hangup") + metadata_v1(4, "t"), 0)
    assert conn.transport.sent == [] and not conn.transport.closed
    parked[0].complete({"topics": []})
    assert correlation_ids(conn.transport.sent) == [1, 2] and conn.transport.closed


def test_close_connection_from_a_handler_closes_once_written_without_lingering(conn):
    lingered = []
    conn.transport.close_after_write = lambda linger=False: lingered.append(linger)  # the TCP transport's method
    conn.data_received(metadata_v1(1, "t") + metadata_v1(2, "hangup"), 0)
    assert correlation_ids(conn.transport.sent) == [1] and lingered == [False]  # an acks=0 failure: no answer to read


def test_a_bug_building_a_parked_answer_neither_reaches_the_settler_nor_stalls_the_connection():
    from zbroker.frontends.kafka import groupmap
    from zbroker.frontends.kafka.datapath import then

    parked: list[Completion] = []

    def metadata(app, ctx, req, version, now_ms):
        inner = Completion()
        parked.append(inner)
        if req.topics[0].name == "gathered":
            return groupmap.gather([inner], lambda values: {"topics": [{"name": 1 / 0}]})
        return then(inner, lambda value: {"topics": [{"name": value["oops"]}]})

    router = KafkaRouter(None, [KafkaRoute(3, "Metadata", (1, 1), metadata)], AllowAll(), RequestMetrics())
    conn = KafkaConnection(router, 1, "peer", Wire(), max_request_bytes=10_000)
    conn.data_received(metadata_v1(1, "x") + metadata_v1(2, "gathered"), 0)
    for inner in parked:  # a service settling its completions in a loop, as a group answers its members
        inner.complete({})
    assert correlation_ids(conn.transport.sent) == [1, 2] and not conn.transport.closed


def test_a_route_whose_error_answer_fails_closes_the_connection_instead_of_hanging_it():
    parked: list[Completion] = []

    def metadata(app, ctx, req, version, now_ms):
        done = Completion()
        parked.append(done)
        return done

    def broken_error(req, version, code, message):
        raise KeyError("bug")

    router = KafkaRouter(None, [KafkaRoute(3, "Metadata", (1, 1), metadata, error=broken_error)], AllowAll(), RequestMetrics())
    conn = KafkaConnection(router, 1, "peer", Wire(), max_request_bytes=10_000)
    conn.data_received(metadata_v1(1, "x"), 0)
    parked[0].fail(RequestError(ErrorCode.REQUEST_TIMED_OUT, "slow"))  # must not raise into the settler
    assert conn.transport.closed


def test_an_error_builder_that_fails_on_a_handlers_error_closes_after_the_answers_before_it():
    def metadata(app, ctx, req, version, now_ms):
        if req.topics[0].name == "bad":
            raise RequestError(ErrorCode.INVALID_REQUEST, "bad topic")
        return {"topics": [{"name": req.topics[0].name}]}

    def broken_error(req, version, code, message):
        raise KeyError("bug")

    router = KafkaRouter(None, [KafkaRoute(3, "Metadata", (1, 1), metadata, error=broken_error)], AllowAll(), RequestMetrics())
    conn = KafkaConnection(router, 1, "peer", Wire(), max_request_bytes=10_000)
    conn.data_received(metadata_v1(1, "ok") + metadata_v1(2, "bad") + metadata_v1(3, "never"), 0)  # must not raise
    assert correlation_ids(conn.transport.sent) == [1] and conn.transport.closed


def test_a_long_client_id_is_kept_clipped():
    buf = io.BytesIO()
    entity_writer(MetadataV1)(buf, MetadataV1(topics=()))
    router = KafkaRouter(None, [KafkaRoute(3, "Metadata", (1, 1), lambda *a: {"topics": []})], AllowAll(), RequestMetrics())
    conn = KafkaConnection(router, 1, "peer", Wire(), max_request_bytes=100_000)
    conn.data_received(request(3, 1, 1, buf.getvalue(), client_id="c" * 30_000), 0)
    assert conn.client_id == "c" * 255


def test_api_versions_lists_the_table_and_answers_any_version(conn):
    conn.data_received(request(18, 0, 1) + request(18, 9, 2), 0)
    first, second = conn.transport.sent
    assert struct.unpack_from(">ihi", first, 4) == (1, 0, 2)
    assert struct.unpack_from(">ihi", second, 4) == (2, 35, 2)
    assert struct.unpack_from(">hhh", first, 14) == (3, 1, 1)


def test_answers_parked_for_a_connection_that_closes_are_abandoned(conn, parked):
    conn.data_received(metadata_v1(1, "later") + metadata_v1(2, "later"), 0)
    assert len(parked) == 2 and len(conn.parked) == 2
    freed = []
    parked[0].on_abandon(lambda: freed.append(1))
    conn.connection_lost()
    assert freed == [1] and not conn.parked
    assert all(p._callback is None for p in parked)  # nothing holds the closed connection any more
    parked[1].complete({"topics": []})  # settling later is harmless
    assert conn.transport.sent == []
