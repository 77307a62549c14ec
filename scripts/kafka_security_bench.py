#!/usr/bin/env python3
"""What the Kafka door's SASL and TLS cost the broker's one event loop.

1. Per login, in-process (sans-IO, no sockets): the broker's CPU time for a SCRAM-SHA-256 and a
   SCRAM-SHA-512 exchange (its two steps; the client's PBKDF2 is not counted), a PLAIN login
   (one PBKDF2 on the broker), and a TLS handshake (the server side of ``TlsSession``), at
   ``--iterations`` (Kafka's default: 4096).
2. With ``--records N``: one broker per listener kind (PLAINTEXT, then SASL_SSL with
   SCRAM-SHA-512), a confluent-kafka producer then a consumer of N 100-byte records, records/s
   of each (what TLS encryption costs the loop).

    python scripts/kafka_security_bench.py [--iterations 4096] [--logins 200] [--records 300000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import scramp  # noqa: E402
import trustme  # noqa: E402

from zbroker.control.security_meta import ScramCredential  # noqa: E402
from zbroker.frontends.kafka.sasl import SaslSession  # noqa: E402
from zbroker.net.tcp_listener import TlsSession, server_tls_context  # noqa: E402

PASSWORD = "bench-password"


def credentials(iterations: int) -> dict:
    out = {}
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        salt, stored, server, count = scramp.ScramMechanism(mechanism).make_auth_info(PASSWORD, iteration_count=iterations)
        out[mechanism] = ScramCredential(mechanism, salt, count, stored, server)
    return out


def scram_login_ms(users: dict, mechanism: str, logins: int) -> float:
    """Broker CPU per SCRAM login: only the session's two steps are timed."""
    spent = 0.0
    for _ in range(logins):
        session = SaslSession(("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"), users.get, b"k" * 32)
        client = scramp.ScramClient([mechanism], "bench", PASSWORD)
        first = client.get_client_first().encode()
        started = time.perf_counter()
        session.handshake(mechanism, 1)
        server_first = session.authenticate(first)
        spent += time.perf_counter() - started
        client.set_server_first(server_first.decode())
        final = client.get_client_final().encode()
        started = time.perf_counter()
        session.authenticate(final)
        spent += time.perf_counter() - started
        assert session.authenticated
    return spent / logins * 1000


def plain_login_ms(users: dict, logins: int) -> float:
    token = f"\0bench\0{PASSWORD}".encode()
    started = time.perf_counter()
    for _ in range(logins):
        session = SaslSession(("PLAIN",), users.get, b"k" * 32)
        session.handshake("PLAIN", 1)
        session.authenticate(token)
    return (time.perf_counter() - started) / logins * 1000


def pki(folder: Path) -> tuple[str, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = [str(folder / n) for n in ("ca.pem", "cert.pem", "key.pem")]
    ca.cert_pem.write_to_path(paths[0])
    cert.cert_chain_pems[0].write_to_path(paths[1])
    cert.private_key_pem.write_to_path(paths[2])
    return paths[0], paths[1], paths[2]


def tls_handshake_ms(folder: Path, count: int) -> float:
    """Server CPU per TLS handshake (TLS 1.3, trustme's ECDSA certificate), memory BIOs both sides."""
    ca_file, cert_file, key_file = pki(folder)
    server_context = server_tls_context(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=ca_file)
    spent = 0.0
    for _ in range(count):
        server = TlsSession(server_context)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                client.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            data = outgoing.read()
            started = time.perf_counter()
            if data:
                server.receive(data)
            reply = server.outgoing()
            spent += time.perf_counter() - started
            incoming.write(reply)
            if done and server.state.value == "open":
                break
    return spent / count * 1000


# -- throughput ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zbroker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zbroker", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def throughput(folder: Path, secure: bool, records: int) -> tuple[float, float]:
    port, kafka_port = free_port(), free_port()
    lines = ["[[broker]]", "id = 1", 'host = "127.0.0.1"', f"port = {port}", f"kafka_port = {kafka_port}",
             f'data_dir = "{folder / "data"}"']
    conf = {"bootstrap.servers": f"127.0.0.1:{kafka_port}"}
    if secure:
        ca_file, cert_file, key_file = pki(folder)
        lines += [f'kafka_tls_cert_file = "{cert_file}"', f'kafka_tls_key_file = "{key_file}"', "", "[security]",
                  'kafka_sasl = ["SCRAM-SHA-512"]', 'super_users = ["User:bench", "User:ANONYMOUS"]']
        conf.update({"security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "bench",
                     "sasl.password": PASSWORD, "ssl.ca.location": ca_file})
    (folder / "b.toml").write_text("\n".join(lines) + "\n")
    broker = subprocess.Popen([sys.executable, "-m", "zbroker", "serve", "--config", str(folder / "b.toml"),
                               "--log-level", "WARNING"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while zbroker("--bootstrap", f"127.0.0.1:{port}", "topics", "list").returncode != 0:
            if broker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the broker did not start")
            time.sleep(0.2)
        if secure:
            assert zbroker("--bootstrap", f"127.0.0.1:{port}", "users", "add", "bench", "--password", PASSWORD).returncode == 0
        assert zbroker("--bootstrap", f"127.0.0.1:{port}", "topics", "create", "bench", "--partitions", "3").returncode == 0
        return produce_consume(conf, records)
    finally:
        broker.terminate()
        broker.wait(30)


def produce_consume(conf: dict, records: int) -> tuple[float, float]:
    from confluent_kafka import Consumer, Producer, TopicPartition

    value = b"x" * 100
    producer = Producer({**conf, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    started = time.perf_counter()
    for i in range(records):
        while True:
            try:
                producer.produce("bench", value, partition=i % 3)
                break
            except BufferError:
                producer.poll(0.01)
    producer.flush(120)
    produced = records / (time.perf_counter() - started)
    consumer = Consumer({**conf, "group.id": "bench", "enable.auto.commit": False, "fetch.queue.backoff.ms": 10})
    consumer.assign([TopicPartition("bench", p, 0) for p in range(3)])
    got, started = 0, time.perf_counter()
    while got < records:
        got += sum(1 for m in consumer.consume(10_000, 1.0) if m.error() is None)
    consumed = records / (time.perf_counter() - started)
    consumer.close()
    return produced, consumed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4096)
    parser.add_argument("--logins", type=int, default=200)
    parser.add_argument("--records", type=int, default=0, help="also measure produce/consume throughput (0: skip)")
    args = parser.parse_args()
    users = {"bench": credentials(args.iterations)}
    print(f"broker CPU per login at {args.iterations} iterations ({args.logins} logins each):")
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        print(f"  {mechanism:14} {scram_login_ms(users, mechanism, args.logins):7.3f} ms")
    print(f"  {'PLAIN':14} {plain_login_ms(users, args.logins):7.3f} ms  (checked against the SCRAM-SHA-256 credential)")
    only_512 = {"bench": {"SCRAM-SHA-512": users["bench"]["SCRAM-SHA-512"]}}
    print(f"  {'PLAIN':14} {plain_login_ms(only_512, args.logins):7.3f} ms  (a user with only SCRAM-SHA-512)")
    folder = Path(tempfile.mkdtemp(prefix="zbroker-secbench-"))
    try:
        print(f"  {'TLS handshake':14} {tls_handshake_ms(folder, args.logins):7.3f} ms  (server side)")
        if args.records:
            for secure in (False, True):
                sub = folder / ("sasl_ssl" if secure else "plaintext")
                sub.mkdir()
                produced, consumed = throughput(sub, secure, args.records)
                name = "SASL_SSL SCRAM-SHA-512" if secure else "PLAINTEXT"
                print(f"{name:24} produce {produced:10,.0f} records/s   consume {consumed:10,.0f} records/s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
