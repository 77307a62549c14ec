"""SASL_SSL on a real broker: confluent-kafka, kafka-python and kcat log in with SCRAM-SHA-256
and SCRAM-SHA-512 over TLS (a test CA from trustme), produce and consume; wrong passwords and
unknown users are refused and reported; bytes that are not TLS close only their connection.
Also TLS without SASL (SSL)."""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
import uuid

import pytest

from kafka_sasl_support import (
    SCRAM,
    confluent_auth_error,
    confluent_config,
    kafka_python_config,
    kcat_settings,
    old_tls_context,
    running_sasl_broker,
    start_broker,
)
from kafka_tools import kcat

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    yield from running_sasl_broker(tmp_path_factory.mktemp("sasl-ssl"), True, "alice", PASSWORD)


def topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("mechanism", SCRAM)
def test_confluent_kafka_produces_and_consumes_with_scram_over_tls(broker, mechanism):
    from confluent_kafka import Consumer, Producer

    conf = confluent_config(broker, mechanism, "alice", PASSWORD)
    name = topic()
    producer = Producer(conf)
    for i in range(5):
        producer.produce(name, key=b"k%d" % i, value=b"v%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer({**conf, "group.id": f"g-{name}", "auto.offset.reset": "earliest"})
    consumer.subscribe([name])
    got, deadline = [], time.monotonic() + 60
    try:
        while len(got) < 5 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    assert sorted(got) == [b"v%d" % i for i in range(5)]


@pytest.mark.parametrize("mechanism", SCRAM)
def test_kafka_python_produces_and_consumes_with_scram_over_tls(broker, mechanism):
    from kafka import KafkaConsumer, KafkaProducer

    conf = kafka_python_config(broker, mechanism, "alice", PASSWORD)
    name = topic()
    producer = KafkaProducer(**conf)
    try:
        for i in range(3):
            producer.send(name, b"kp%d" % i).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(name, auto_offset_reset="earliest", consumer_timeout_ms=20_000, **conf)
    try:
        got = []
        for msg in consumer:
            got.append(msg.value)
            if len(got) == 3:
                break
    finally:
        consumer.close()
    assert sorted(got) == [b"kp0", b"kp1", b"kp2"]


@pytest.mark.parametrize("mechanism", SCRAM)
def test_kcat_produces_and_consumes_with_scram_over_tls(broker, mechanism):
    settings = kcat_settings(broker, mechanism, "alice", PASSWORD)
    name = topic()
    out = kcat(broker.kafka_bootstrap, *settings, "-P", "-t", name, "-K:", input=b"a:1\nb:2\n")
    assert out.returncode == 0, out.stderr.decode()
    out = kcat(broker.kafka_bootstrap, *settings, "-C", "-t", name, "-o", "beginning", "-e", "-f", "%k=%s\\n")
    assert out.returncode == 0, out.stderr.decode()
    assert sorted(out.stdout.decode().split()) == ["a=1", "b=2"]


@pytest.mark.parametrize("user, password", [("alice", "wrong"), ("nobody", PASSWORD)])
def test_wrong_passwords_and_unknown_users_are_refused_and_reported_by_every_client(broker, user, password, caplog):
    message = "Authentication failed: invalid credentials with SASL mechanism"
    assert message in confluent_auth_error(confluent_config(broker, "SCRAM-SHA-256", user, password))
    out = kcat(broker.kafka_bootstrap, *kcat_settings(broker, "SCRAM-SHA-512", user, password), "-L", "-m", "5",
               timeout=60)
    assert out.returncode != 0 and message in out.stderr.decode()
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kafka"), pytest.raises(KafkaTimeoutError):
        KafkaProducer(bootstrap_timeout_ms=3000, **kafka_python_config(broker, "SCRAM-SHA-512", user, password))
    assert time.monotonic() - started < 30  # kafka-python retries its bootstrap until its timeout, then raises
    assert any("SaslAuthenticationFailedError" in r.getMessage() and message in r.getMessage() for r in caplog.records)


def test_plaintext_and_garbage_on_the_tls_port_close_that_connection_and_the_broker_serves_on(broker):
    host, port = broker.kafka_bootstrap.split(":")
    api_versions = struct.pack(">ihhih", 10, 18, 3, 1, -1) + b"\0\0\0\0"
    for junk in (api_versions, b"\x16\x03\x01\x00\x01\xff" + b"\0" * 100, bytes(range(256)) * 64):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            try:
                sock.sendall(junk)
                while sock.recv(65536):  # a TLS alert may come first; then the broker closes
                    pass
            except ConnectionResetError:
                pass
    context = ssl.create_default_context(cafile=broker.pki["ca"])
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    out = kcat(broker.kafka_bootstrap, *kcat_settings(broker, "SCRAM-SHA-256", "alice", PASSWORD), "-L")
    assert out.returncode == 0, out.stderr.decode()
    assert broker.alive()
    assert "TLS handshake failed" in broker.log_text(None)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ssl.TLSVersion.TLSv1_1, on purpose
def test_tls_below_1_2_is_refused(broker):
    context = old_tls_context()
    if context is None:
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    host, port = broker.kafka_bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as err:
            context.wrap_socket(raw)
    if err.value.reason == "NO_PROTOCOLS_AVAILABLE":
        pytest.skip("this OpenSSL refuses to send a TLS 1.1 ClientHello")


def test_ssl_without_sasl_serves_anonymous_clients_over_tls(tmp_path):
    proc = start_broker(tmp_path, tls=True, mechanisms=())
    try:
        settings = ["-X", "security.protocol=SSL", "-X", f"ssl.ca.location={proc.pki['ca']}"]
        out = kcat(proc.kafka_bootstrap, *settings, "-P", "-t", "plain-tls", input=b"hello\n")
        assert out.returncode == 0, out.stderr.decode()
        out = kcat(proc.kafka_bootstrap, *settings, "-C", "-t", "plain-tls", "-o", "beginning", "-e")
        assert out.stdout.decode().split() == ["hello"], out.stderr.decode()
        assert "(SSL)" in proc.log_text(None)
    finally:
        proc.close()


def test_kafka_admin_clients_manage_scram_users_with_kip_554(broker):
    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(confluent_config(broker, "SCRAM-SHA-512", "alice", PASSWORD))
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"erin-pw"),
        UserScramCredentialDeletion("ghost", ScramMechanism.SCRAM_SHA_512)])
    assert futures["erin"].result(30) is None
    with pytest.raises(Exception, match="RESOURCE_NOT_FOUND"):
        futures["ghost"].result(30)
    described = admin.describe_user_scram_credentials(["erin"])["erin"].result(30)
    assert [(i.mechanism, i.iterations) for i in described.scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_256, 8192)]
    from confluent_kafka import Producer

    assert Producer(confluent_config(broker, "SCRAM-SHA-256", "erin", "erin-pw")).list_topics(timeout=20).brokers
    futures = admin.alter_user_scram_credentials([UserScramCredentialDeletion("erin", ScramMechanism.SCRAM_SHA_256)])
    assert futures["erin"].result(30) is None
    assert "Authentication failed" in confluent_auth_error(confluent_config(broker, "SCRAM-SHA-256", "erin", "erin-pw"))
