"""Real Kafka clients for the Kafka door's tests: helpers to run them."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def kcat_path() -> str:
    path = shutil.which("kcat")
    if path is None:
        pytest.fail("kcat is not installed: run ./scripts/test.sh (it installs Debian's kcat)")
    return path


def kcat(bootstrap: str, *args: str, input: bytes | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run kcat against ``bootstrap``; the completed process (stdout and stderr as bytes)."""
    return subprocess.run([kcat_path(), "-b", bootstrap, *args], input=input, capture_output=True, timeout=timeout)



def kafka_request(bootstrap: str, api_key: int, version: int, fields: dict, timeout: float = 10.0,
                  correlation_id: int = 1):
    """Send one request on a new connection and return kio's decoded response.

    The body is kio's request of (``api_key``, ``version``) built from ``fields`` as the
    broker builds responses (:func:`zbroker.frontends.kafka.codec.build`: absent fields get
    zero values, ints become ms durations)."""
    import io
    import socket
    import struct

    from kio.index import load_request_schema, load_response_schema
    from kio.serial import entity_reader, entity_writer

    from zbroker.frontends.kafka.codec import build

    schema = load_request_schema(api_key, version)
    out = io.BytesIO()
    header = schema.__header_schema__(request_api_key=api_key, request_api_version=version,
                                      correlation_id=correlation_id, client_id="zbroker-tests")
    entity_writer(schema.__header_schema__)(out, header)
    entity_writer(schema)(out, build(schema, fields))
    message = out.getvalue()
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(message)) + message)
        size = struct.unpack(">i", read_exactly(sock, 4))[0]
        reply = read_exactly(sock, size)
    assert struct.unpack_from(">i", reply)[0] == correlation_id
    response = load_response_schema(api_key, version)
    body, _size = entity_reader(response)(reply, 5 if response.__flexible__ else 4)
    return body


def read_exactly(sock, n: int) -> bytes:
    """``n`` bytes from ``sock`` (failing if the broker closes the connection first)."""
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "the broker closed the connection"
        out += chunk
    return out
