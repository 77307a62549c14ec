"""The Kafka door's handshake and metadata, against real clients and raw bytes."""

from __future__ import annotations

import socket
import struct

import pytest

from kafka_tools import kcat, read_exactly

pytestmark = pytest.mark.timeout(60)


def raw_request(sock: socket.socket, api_key: int, version: int, cid: int, body: bytes = b"", flexible: bool = False) -> bytes:
    header = struct.pack(">hhih", api_key, version, cid, 4) + b"test" + (b"\0" if flexible else b"")
    message = header + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    size = struct.unpack(">i", read_exactly(sock, 4))[0]
    return read_exactly(sock, size)


def test_kcat_lists_metadata_with_the_advertised_address(kbroker):
    out = kcat(kbroker.kafka_bootstrap, "-L", "-t", "created-by-metadata")
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert f"broker 1 at {kbroker.kafka_bootstrap}" in text
    assert "0.0.0.0" not in text


def test_api_versions_v0_then_a_too_new_version_gets_the_list_and_the_connection_stays(kbroker):
    host, port = kbroker.kafka_bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        reply = raw_request(sock, 18, 0, 1)
        cid, error, count = struct.unpack_from(">ihi", reply)
        assert (cid, error) == (1, 0) and count >= 2
        keys = {struct.unpack_from(">hhh", reply, 10 + 6 * i)[0]: struct.unpack_from(">hhh", reply, 10 + 6 * i)[1:] for i in range(count)}
        assert keys[18] == (0, 4) and 3 in keys
        # KIP-511: a version this broker does not know -> UNSUPPORTED_VERSION with the list, in v0
        reply = raw_request(sock, 18, 99, 2, flexible=True)
        cid, error, count2 = struct.unpack_from(">ihi", reply)
        assert (cid, error, count2) == (2, 35, count)
        # an API key nobody serves: a clean error, and the connection still answers
        reply = raw_request(sock, 999, 0, 3)
        assert struct.unpack(">ih", reply) == (3, 35)
        # a version of an API served, but not that one: the same (Produce v99)
        reply = raw_request(sock, 0, 99, 5, body=b"\0" * 16)
        assert struct.unpack(">ih", reply) == (5, 35)
        reply = raw_request(sock, 18, 0, 4)
        assert struct.unpack_from(">ih", reply) == (4, 0)


def test_a_request_larger_than_the_limit_closes_only_that_connection(kbroker):
    host, port = kbroker.kafka_bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", 2**31 - 1))
        assert sock.recv(10) == b""  # closed without buffering 2 GiB
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert struct.unpack_from(">ih", raw_request(sock, 18, 0, 9)) == (9, 0)


def test_pipelined_requests_are_answered_in_order_while_another_client_is_served(kbroker):
    """2,000 requests sent before any reply is read: another client is served meanwhile, and
    every reply arrives in order once the first client reads."""
    host, port = kbroker.kafka_bootstrap.split(":")
    count = 2000
    request = b"".join(struct.pack(">i", 10) + struct.pack(">hhih", 18, 0, cid, 0) for cid in range(count))
    with socket.create_connection((host, int(port)), timeout=20) as greedy:
        greedy.sendall(request)
        with socket.create_connection((host, int(port)), timeout=10) as other:
            assert struct.unpack_from(">ih", raw_request(other, 18, 0, 7)) == (7, 0)
        for cid in range(count):
            size = struct.unpack(">i", read_exactly(greedy, 4))[0]
            reply = read_exactly(greedy, size)
            assert struct.unpack_from(">ih", reply) == (cid, 0)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_fetches_pipelined_by_a_client_that_does_not_read_run_a_few_at_a_time(kbroker):
    """400 Fetch requests of a 2 MB record in one write, replies unread: the broker runs
    at most MAX_IN_FLIGHT at once and none while the connection's output is backed up
    (it used to run them all: 800 MB of replies held for one client); every reply still
    comes, in order, once the client reads."""
    import io
    import time

    from kio.index import load_request_schema
    from kio.serial import entity_writer

    from kafka_tools import kafka_request
    from storage.batch import build_kafka_batch
    from zbroker.frontends.kafka.codec import build

    bootstrap = kbroker.kafka_bootstrap
    created = kafka_request(bootstrap, 19, 5, {"topics": [{"name": "big", "num_partitions": 1, "replication_factor": 1,
                                                           "configs": [{"name": "max.message.bytes", "value": "3000000"}]}],
                                               "timeout": 10_000})
    assert created.topics[0].error_code == 0
    deadline = time.monotonic() + 10
    while True:
        answer = kafka_request(bootstrap, 0, 9, {"acks": 1, "timeout": 5000, "topic_data": [{"name": "big", "partition_data": [
            {"index": 0, "records": build_kafka_batch([(int(time.time() * 1000), None, bytes(2_000_000), None)])}]}]})
        if answer.responses[0].partition_responses[0].error_code == 0:
            break
        assert time.monotonic() < deadline, answer
        time.sleep(0.1)
    schema = load_request_schema(1, 11)
    fetch = build(schema, {"replica_id": -1, "max_wait": 0, "min_bytes": 1, "max_bytes": 4_000_000, "topics": [
        {"topic": "big", "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 4_000_000,
                                         "current_leader_epoch": -1, "log_start_offset": -1}]}]})
    requests = []
    for cid in range(400):
        out = io.BytesIO()
        entity_writer(schema.__header_schema__)(out, schema.__header_schema__(
            request_api_key=1, request_api_version=11, correlation_id=cid, client_id="hoarder"))
        entity_writer(schema)(out, fetch)
        requests.append(struct.pack(">i", len(out.getvalue())) + out.getvalue())
    host, port = bootstrap.split(":")
    before = _rss_kib(kbroker.proc.pid)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"".join(requests))
        peak = before
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the broker does whatever it will with them
            peak = max(peak, _rss_kib(kbroker.proc.pid))
            time.sleep(0.05)
        assert peak - before < 400_000, f"broker RSS grew by {(peak - before) // 1024} MiB for one client's unread replies"
        for cid in range(400):
            size = struct.unpack(">i", read_exactly(sock, 4))[0]
            reply = read_exactly(sock, size)
            assert struct.unpack_from(">i", reply)[0] == cid
