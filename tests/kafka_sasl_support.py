"""Helpers for the Kafka door's SASL and TLS tests: brokers with `[security] kafka_sasl` (and
TLS, with a test CA from trustme), users added with `zbroker users add`, client settings for
confluent-kafka, kafka-python and kcat, and a raw Kafka connection for bad-input tests."""

from __future__ import annotations

import io
import socket
import ssl
import struct
import time
from pathlib import Path

import trustme

from kafka_tools import read_exactly
from support import BrokerProcess, run_cli

SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
MECHANISMS = (*SCRAM, "PLAIN")
#: Users the tests log in as.  They are super users so that the ACL authorizer (security is on
#: once kafka_sasl is set: no ACL means denied) lets them produce and consume; User:ANONYMOUS is
#: the native door's `zbroker users` CLI without CURVE.
SUPER_USERS = ("User:alice", "User:bob", "User:carol", "User:dave", "User:ANONYMOUS")


def make_pki(folder: Path) -> dict[str, str]:
    """A test CA and a certificate for 127.0.0.1 signed by it: paths of ``ca``, ``cert``, ``key``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(paths["ca"])
    cert.private_key_pem.write_to_path(paths["key"])
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(paths["cert"], append=i > 0)
    return {k: str(v) for k, v in paths.items()}


def start_broker(root: Path, tls: bool, mechanisms=MECHANISMS) -> BrokerProcess:
    """A single broker with SASL (``mechanisms``; none: no SASL) on its Kafka listener, over
    TLS if ``tls``; ``proc.pki`` holds the CA, certificate and key paths (TLS only)."""
    root.mkdir(parents=True, exist_ok=True)
    proc = BrokerProcess(root / "data", config=root / "broker.toml")
    proc.use_config_only = True
    lines = ["[[broker]]", "id = 1", 'host = "127.0.0.1"', f"port = {proc.port}", f"kafka_port = {proc.kafka_port}",
             f'data_dir = "{proc.data_dir}"']
    proc.pki = None
    if tls:
        proc.pki = make_pki(root / "pki")
        lines += [f'kafka_tls_cert_file = "{proc.pki["cert"]}"', f'kafka_tls_key_file = "{proc.pki["key"]}"']
    lines += ["", "[security]", f"kafka_sasl = {list(mechanisms)!r}".replace("'", '"'),
              f"super_users = {list(SUPER_USERS)!r}".replace("'", '"'), ""]
    proc.config.write_text("\n".join(lines))
    return proc.start()


def running_sasl_broker(root: Path, tls: bool, user: str, password: str):
    """A generator for a fixture: :func:`start_broker` with ``user`` added, closed at the end."""
    proc = start_broker(root, tls)
    try:
        add_user(proc, user, password)
        yield proc
    finally:
        proc.close()


def old_tls_context() -> ssl.SSLContext:
    """A client context that offers only TLS 1.1 (the broker must refuse it), or None if this
    OpenSSL cannot offer it at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return None
    return context


def users(proc: BrokerProcess, *args: str, input: bytes | None = None):
    """`zbroker users ARGS` against ``proc``; the completed process."""
    return run_cli("users", *args, bootstrap=proc.bootstrap, input=input)


def add_user(proc: BrokerProcess, name: str, password: str) -> None:
    out = users(proc, "add", name, "--password", password)
    assert out.returncode == 0, out.stderr.decode()


def security_protocol(proc: BrokerProcess) -> str:
    return "SASL_SSL" if proc.pki else "SASL_PLAINTEXT"


def confluent_config(proc: BrokerProcess, mechanism: str, user: str, password: str) -> dict:
    conf = {"bootstrap.servers": proc.kafka_bootstrap, "security.protocol": security_protocol(proc),
            "sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password}
    if proc.pki:
        conf["ssl.ca.location"] = proc.pki["ca"]
    return conf


def kafka_python_config(proc: BrokerProcess, mechanism: str, user: str, password: str) -> dict:
    conf = {"bootstrap_servers": proc.kafka_bootstrap, "security_protocol": security_protocol(proc),
            "sasl_mechanism": mechanism, "sasl_plain_username": user, "sasl_plain_password": password}
    if proc.pki:
        conf["ssl_context"] = ssl.create_default_context(cafile=proc.pki["ca"])
    return conf


def kcat_settings(proc: BrokerProcess, mechanism: str, user: str, password: str) -> list[str]:
    args = ["-X", f"security.protocol={security_protocol(proc)}", "-X", f"sasl.mechanisms={mechanism}",
            "-X", f"sasl.username={user}", "-X", f"sasl.password={password}"]
    if proc.pki:
        args += ["-X", f"ssl.ca.location={proc.pki['ca']}"]
    return args


def confluent_auth_error(conf: dict, timeout: float = 20.0) -> str:
    """Start a confluent-kafka producer with ``conf`` and return the authentication error it
    reports (failing the test if it reports none in ``timeout``)."""
    from confluent_kafka import KafkaError, Producer

    errors = []
    producer = Producer({**conf, "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        producer.poll(0.2)
        found = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
        if found:
            return found[0].str()
    raise AssertionError(f"no authentication error in {timeout} s; errors: {[e.str() for e in errors]}")


class RawKafka:
    """One raw connection to a Kafka listener (plain TCP), speaking requests through kio."""

    def __init__(self, bootstrap: str, timeout: float = 10.0) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.cid = 0

    def send(self, api_key: int, version: int, fields: dict | None = None) -> None:
        from kio.serial import entity_writer

        from zbroker.frontends.kafka.codec import build, request_schema

        schema = request_schema(api_key, version)
        self.cid += 1
        out = io.BytesIO()
        entity_writer(schema.__header_schema__)(out, schema.__header_schema__(
            request_api_key=api_key, request_api_version=version, correlation_id=self.cid, client_id="sasl-tests"))
        entity_writer(schema)(out, build(schema, fields or {}))
        self.send_raw(struct.pack(">i", out.tell()) + out.getvalue())

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, api_key: int, version: int):
        from kio.serial import entity_reader

        from zbroker.frontends.kafka.codec import response_schema

        size = struct.unpack(">i", read_exactly(self.sock, 4))[0]
        reply = read_exactly(self.sock, size)
        assert struct.unpack_from(">i", reply)[0] == self.cid
        schema = response_schema(api_key, version)
        return entity_reader(schema)(reply, 5 if schema.__flexible__ and api_key != 18 else 4)[0]

    def call(self, api_key: int, version: int, fields: dict | None = None):
        self.send(api_key, version, fields)
        return self.receive(api_key, version)

    def closed_by_broker(self, timeout: float = 10.0) -> bool:
        """Whether the broker closes the connection (reading and dropping anything before it)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
            return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def plain_login(self, user: str, password: str):
        """SaslHandshake v1 + SaslAuthenticate v2 with PLAIN; the SaslAuthenticate answer."""
        assert self.call(17, 1, {"mechanism": "PLAIN"}).error_code.value == 0
        return self.call(36, 2, {"auth_bytes": f"\0{user}\0{password}".encode()})

    def close(self) -> None:
        self.sock.close()
