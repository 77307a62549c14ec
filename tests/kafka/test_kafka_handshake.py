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
