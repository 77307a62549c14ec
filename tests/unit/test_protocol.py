"""Header codec and request schemas (no sockets)."""

import msgpack
import pytest

from zbroker import protocol as P
from zbroker.errors import ErrorCode


def test_decode_header_needs_a_map_with_an_integer_cid():
    assert P.decode_header(msgpack.packb({"cid": 3, "type": "x"}))["cid"] == 3
    for bad in (b"", b"\xc1", msgpack.packb([1]), msgpack.packb({"cid": "3"}), msgpack.packb({"cid": True}), msgpack.packb({})):
        with pytest.raises(P.UndecodableFrame):
            P.decode_header(bad)


def test_decode_header_refuses_oversized_frames():
    with pytest.raises(P.UndecodableFrame, match="exceeds"):
        P.decode_header(msgpack.packb({"cid": 1, "pad": "x" * 100}), max_size=50)


def test_every_input_prefix_and_trailing_garbage_is_rejected_not_crashing():
    frame = P.encode(P.request(P.FETCH, 7, partitions=[{"topic": "t", "partition": 0, "offset": 1}]))
    for cut in range(len(frame)):
        with pytest.raises(P.UndecodableFrame):
            P.decode_header(frame[:cut])
    with pytest.raises(P.UndecodableFrame):
        P.decode_header(frame + b"\x00junk")


def test_request_defaults_are_filled_in():
    kind, fields = P.decode_request(P.request(P.FETCH, 1, partitions=[{"topic": "t", "partition": 0, "offset": 5}]))
    assert kind == P.FETCH
    assert fields["max_wait_ms"] == 500 and fields["min_bytes"] == 1
    assert fields["partitions"][0]["max_bytes"] == 1048576


@pytest.mark.parametrize(
    "header, code, message",
    [
        ({"v": 2, "type": "metadata", "cid": 1}, ErrorCode.UNSUPPORTED_VERSION, "version 2"),
        ({"type": "metadata", "cid": 1}, ErrorCode.UNSUPPORTED_VERSION, "version None"),
        ({"v": 1, "type": "nope", "cid": 1}, ErrorCode.INVALID_REQUEST, "unknown request type 'nope'"),
        ({"v": 1, "type": 5, "cid": 1}, ErrorCode.INVALID_REQUEST, "unknown request type 5"),
        ({"v": 1, "type": "delete_topic", "cid": 1}, ErrorCode.INVALID_REQUEST, "missing field 'topic'"),
        ({"v": 1, "type": "delete_topic", "cid": 1, "topic": 3}, ErrorCode.INVALID_REQUEST, "'topic' must be string, got int"),
        ({"v": 1, "type": "produce", "cid": 1, "acks": True, "batches": []}, ErrorCode.INVALID_REQUEST, "'acks' must be integer, got bool"),
        ({"v": 1, "type": "produce", "cid": 1, "batches": [7]}, ErrorCode.INVALID_REQUEST, "'batches[0]' must be a map"),
        ({"v": 1, "type": "metadata", "cid": 1, "topics": [1]}, ErrorCode.INVALID_REQUEST, "'topics[0]' must be string"),
        (
            {"v": 1, "type": "list_offsets", "cid": 1, "partitions": [{"topic": "t", "partition": 0}]},
            ErrorCode.INVALID_REQUEST,
            "missing field 'partitions[0].timestamp'",
        ),
    ],
)
def test_bad_requests_name_what_is_wrong(header, code, message):
    with pytest.raises(P.RequestError) as info:
        P.decode_request(header)
    assert info.value.code == code
    assert message in info.value.message


def test_response_carries_type_cid_and_error():
    msg = P.response(P.PRODUCE, 9, ErrorCode.NOT_LEADER_OR_FOLLOWER, "moved", results=[])
    assert msg == {"v": 1, "type": "produce", "cid": 9, "error": 6, "error_message": "moved", "results": []}
    assert "error_message" not in P.response(P.PRODUCE, 9)
