"""SASL_PLAINTEXT on a real broker: PLAIN with confluent-kafka, kafka-python and kcat; what an
unauthenticated or hostile client gets (raw sockets); users added and removed while the
broker runs (`zbroker users`)."""

from __future__ import annotations

import struct
import time
import uuid

import pytest

from kafka_sasl_support import (
    RawKafka,
    add_user,
    confluent_auth_error,
    confluent_config,
    kafka_python_config,
    kcat_settings,
    running_sasl_broker,
    users,
)
from kafka_tools import kcat
from support import one_line_error
from zbroker.net.tcp_listener import LINGER_MS

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cret-pw"
METADATA = 3, 12


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from running_sasl_broker(tmp_path_factory.mktemp("sasl-plaintext"), False, "alice", PASSWORD)


@pytest.fixture
def raw(broker):
    conn = RawKafka(broker.kafka_bootstrap)
    try:
        yield conn
    finally:
        conn.close()


def test_plain_over_tcp_with_confluent_kafka_python_and_kcat(broker):
    from confluent_kafka import Producer
    from kafka import KafkaConsumer, KafkaProducer

    name = f"p-{uuid.uuid4().hex[:8]}"
    producer = Producer(confluent_config(broker, "PLAIN", "alice", PASSWORD))
    producer.produce(name, b"from-confluent")
    assert producer.flush(30) == 0
    kp = KafkaProducer(**kafka_python_config(broker, "PLAIN", "alice", PASSWORD))
    kp.send(name, b"from-kafka-python").get(timeout=30)
    kp.close()
    out = kcat(broker.kafka_bootstrap, *kcat_settings(broker, "PLAIN", "alice", PASSWORD), "-C", "-t", name,
               "-o", "beginning", "-e", "-c", "2")
    assert sorted(out.stdout.decode().split()) == ["from-confluent", "from-kafka-python"], out.stderr.decode()
    consumer = KafkaConsumer(name, auto_offset_reset="earliest", consumer_timeout_ms=20_000,
                             **kafka_python_config(broker, "PLAIN", "alice", PASSWORD))
    try:
        got = sorted(m.value for _, m in zip(range(2), consumer))
    finally:
        consumer.close()
    assert got == [b"from-confluent", b"from-kafka-python"]
    assert "PLAIN" in confluent_auth_error(confluent_config(broker, "PLAIN", "alice", "nope"))


def test_a_request_before_authentication_closes_the_connection_unanswered(raw):
    versions = raw.call(18, 3)
    assert {17, 36} <= {k.api_key for k in versions.api_keys}
    raw.send(*METADATA)
    assert raw.closed_by_broker()


def test_a_login_then_requests_are_served_as_the_user(raw):
    assert raw.plain_login("alice", PASSWORD).error_code.value == 0
    assert raw.call(*METADATA, {"topics": []}).cluster_id


@pytest.mark.parametrize("steps, code, text", [
    ([(36, 2, {"auth_bytes": b"\0alice\0" + PASSWORD.encode()})], 34, "expected handshake"),  # wrong order
    ([(17, 1, {"mechanism": "GSSAPI"})], 33, None),  # not offered
    ([(17, 1, {"mechanism": "PLAIN"}), (36, 2, {"auth_bytes": b"\0alice\0" + b"x" * 9000})], 58, "at most 8192"),
    ([(17, 1, {"mechanism": "SCRAM-SHA-256"}), (36, 2, {"auth_bytes": b"\x00\xffgarbage\x00"})], 58, "UTF-8"),
    ([(17, 1, {"mechanism": "SCRAM-SHA-512"}), (36, 2, {"auth_bytes": b"n,,garbage"})], 58, "client-first"),
    ([(17, 1, {"mechanism": "PLAIN"}), (17, 1, {"mechanism": "PLAIN"})], 34, None),  # SaslHandshake has no message
])
def test_bad_sasl_input_gets_a_clean_error_then_the_connection_closes(broker, raw, steps, code, text):
    for api_key, version, fields in steps[:-1]:
        assert raw.call(api_key, version, fields).error_code.value == 0
    api_key, version, fields = steps[-1]
    answer = raw.call(api_key, version, fields)
    assert answer.error_code.value == code
    if text is not None:
        assert text in answer.error_message
    if code == 33:
        assert list(answer.mechanisms) == ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
    assert raw.closed_by_broker()


def test_a_refused_login_is_answered_and_the_broker_closes_only_after_leaving_time_to_read_it(raw):
    # The broker lingers after the error answer instead of closing right behind it: a client
    # that reads late finds the answer without the end of the stream (kafka-python drops an
    # answer read together with the end and reports a lost connection).  The end comes when
    # the client closes, or LINGER_MS after the refusal: never sooner, whatever the timing.
    assert raw.call(17, 1, {"mechanism": "PLAIN"}).error_code.value == 0
    refused_before = time.monotonic()
    answer = raw.call(36, 2, {"auth_bytes": b"\0alice\0wrong"})
    assert answer.error_code.value == 58 and "invalid credentials" in answer.error_message
    assert raw.closed_by_broker()
    assert time.monotonic() - refused_before >= LINGER_MS / 1000 - 0.01


@pytest.mark.parametrize("junk", [
    struct.pack(">i", 1 << 20) + b"\0" * 100,  # a request above the pre-authentication limit (16 KiB)
    struct.pack(">i", 12) + b"\xff" * 12,  # an API key nobody serves
    struct.pack(">i", 3) + b"abc",  # shorter than a request header
])
def test_garbage_before_authentication_closes_only_that_connection(broker, raw, junk):
    raw.send_raw(junk)
    assert raw.closed_by_broker()
    out = kcat(broker.kafka_bootstrap, *kcat_settings(broker, "PLAIN", "alice", PASSWORD), "-L")
    assert out.returncode == 0, out.stderr.decode()


def test_the_legacy_v0_handshake_takes_raw_tokens(broker, raw):
    assert raw.call(17, 0, {"mechanism": "PLAIN"}).error_code.value == 0
    token = f"\0alice\0{PASSWORD}".encode()
    raw.send_raw(struct.pack(">i", len(token)) + token)
    assert raw.sock.recv(4) == b"\0\0\0\0"  # an empty token: logged in
    assert raw.call(*METADATA, {"topics": []}).cluster_id
    other = RawKafka(broker.kafka_bootstrap)
    try:
        assert other.call(17, 0, {"mechanism": "PLAIN"}).error_code.value == 0
        other.send_raw(struct.pack(">i", 13) + b"\0alice\0wrong!")
        assert other.closed_by_broker()  # v0 has no error answer: the connection closes
    finally:
        other.close()


def test_users_added_while_running_log_in_and_removed_ones_cannot(broker):
    add_user(broker, "bob", "first-password")
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(confluent_config(broker, "SCRAM-SHA-512", "bob", "first-password"))
    assert admin.list_topics(timeout=20).brokers
    session = RawKafka(broker.kafka_bootstrap)
    try:
        assert session.plain_login("bob", "first-password").error_code.value == 0
        listing = users(broker, "list")
        text = listing.stdout.decode()
        assert listing.returncode == 0 and "bob" in text and "SCRAM-SHA-256,SCRAM-SHA-512" in text and "4096" in text
        assert all(len(line.split()) == 3 for line in text.splitlines())  # names, mechanisms, iterations: no keys
        out = users(broker, "remove", "bob")
        assert out.returncode == 0, out.stderr.decode()
        assert "Authentication failed" in confluent_auth_error(confluent_config(broker, "SCRAM-SHA-256", "bob",
                                                                                "first-password"))
        session.send(*METADATA, {"topics": []})
        assert session.closed_by_broker()  # the open connection ends at its next request
    finally:
        session.close()
    assert "bob" not in users(broker, "list").stdout.decode()


def test_setting_a_password_again_replaces_the_old_one(broker):
    add_user(broker, "carol", "old-password")
    add_user(broker, "carol", "new-password")
    assert "Authentication failed" in confluent_auth_error(confluent_config(broker, "PLAIN", "carol", "old-password"))
    conn = RawKafka(broker.kafka_bootstrap)
    try:
        assert conn.plain_login("carol", "new-password").error_code.value == 0
    finally:
        conn.close()


def test_users_cli_errors_are_one_line(broker):
    assert "no user 'nobody'" in one_line_error(users(broker, "remove", "nobody"))
    assert "is not a user name" in one_line_error(users(broker, "add", ".hidden", "--password", "x"))
    out = users(broker, "add", "dave", "--password", "x", "--iterations", "100")
    assert out.returncode == 2 and "'--iterations': 100 is not in the range 4096" in out.stderr.decode()
    out = users(broker, "add", "dave", "--iterations", "8192", input=b"pw-from-stdin\npw-from-stdin\n")
    assert out.returncode == 0, out.stderr.decode()
    assert "8192" in users(broker, "list").stdout.decode()
    conn = RawKafka(broker.kafka_bootstrap)
    try:
        assert conn.plain_login("dave", "pw-from-stdin").error_code.value == 0
    finally:
        conn.close()
