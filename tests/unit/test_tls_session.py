"""The TCP listener's TLS state machine (net/tcp_listener.TlsSession), without sockets: a
client SSLObject over memory BIOs talks to it, bytes passed by hand (whole, one at a time,
and as garbage)."""

from __future__ import annotations

import ssl
import struct

import pytest
import trustme
from kafka_sasl_support import old_tls_context

from zbroker.net.tcp_listener import TlsError, TlsSession, TlsState, server_tls_context

pytestmark = pytest.mark.timeout(60)

HOST = "broker.test"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """``(server context, client context)`` from a trustme CA."""
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    folder = tmp_path_factory.mktemp("pki")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    for more in cert.cert_chain_pems[1:]:
        more.write_to_path(folder / "cert.pem", append=True)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server_tls_context(str(folder / "cert.pem"), str(folder / "key.pem")), client


class Client:
    """A TLS client over memory BIOs."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=HOST)

    def handshake(self) -> bool:
        try:
            self.tls.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def read(self) -> bytes:
        out = b""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                return out
            if not chunk:
                return out
            out += chunk


def connect(server: TlsSession, client: Client, step: int | None = None) -> None:
    """Run the handshake, passing ciphertext both ways (``step`` bytes at a time to the server)."""
    for _ in range(100):
        done = client.handshake()
        data = client.outgoing.read()
        for i in range(0, len(data), step or max(1, len(data))):
            assert server.receive(data[i:i + (step or len(data))]) == b""
        client.incoming.write(server.outgoing())
        if done and server.state is TlsState.OPEN:
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("step", [None, 1])
def test_a_handshake_then_data_both_ways(pki, step):
    server_context, client_context = pki
    server, client = TlsSession(server_context), Client(client_context)
    assert server.state is TlsState.HANDSHAKE
    connect(server, client, step)
    assert server.state is TlsState.OPEN and server.version in ("TLSv1.2", "TLSv1.3")
    client.tls.write(b"request" * 1000)
    data = client.outgoing.read()
    plain = b"".join(server.receive(data[i:i + (step or len(data))]) for i in range(0, len(data), step or len(data)))
    assert plain == b"request" * 1000
    server.send([b"reply", b"", b"!" * 70_000])  # several TLS records
    client.incoming.write(server.outgoing())
    assert client.read() == b"reply" + b"!" * 70_000


def test_plaintext_kafka_bytes_fail_the_handshake(pki):
    server = TlsSession(pki[0])
    api_versions = struct.pack(">ihhih", 10, 18, 3, 1, -1)
    with pytest.raises(TlsError, match="TLS handshake failed"):
        server.receive(api_versions + b"\0" * 32)
    assert server.state is TlsState.CLOSED
    with pytest.raises(TlsError, match="closed"):
        server.receive(b"more")


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 4])
def test_garbage_fails_the_handshake_or_waits_for_more_within_the_byte_cap(pki, garbage):
    server = TlsSession(pki[0], max_handshake_bytes=4096)
    try:
        while True:  # a record header that announces more keeps the session waiting, up to the cap
            assert server.receive(garbage) == b""
    except TlsError as exc:
        assert "TLS handshake failed" in str(exc) or "without finishing the TLS handshake" in str(exc)
    assert server.state is TlsState.CLOSED


def test_a_trickle_of_handshake_bytes_stops_at_the_cap(pki):
    server = TlsSession(pki[0], max_handshake_bytes=1000)
    header = b"\x16\x03\x01\x40\x00"  # a handshake record announcing 16 KiB, then sent slowly
    server.receive(header)
    with pytest.raises(TlsError, match="more than 1000 bytes"):
        for _ in range(1000):
            server.receive(b"\x01")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ssl.TLSVersion.TLSv1_1, on purpose
def test_tls_older_than_1_2_is_refused(pki):
    server_context, _client = pki
    old = old_tls_context()
    if old is None:
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    server, client = TlsSession(server_context), Client.__new__(Client)
    client.incoming, client.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client.tls = old.wrap_bio(client.incoming, client.outgoing)
    try:
        client.handshake()
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL refuses to send a TLS 1.1 ClientHello: {exc}")
    with pytest.raises(TlsError, match="TLS handshake failed"):
        server.receive(client.outgoing.read())


def test_close_notify_closes_the_session_after_the_data_before_it(pki):
    server, client = TlsSession(pki[0]), Client(pki[1])
    connect(server, client)
    client.tls.write(b"last words")
    try:
        client.tls.unwrap()
    except ssl.SSLWantReadError:
        pass
    assert server.receive(client.outgoing.read()) == b"last words"
    assert server.state is TlsState.CLOSED
    with pytest.raises(TlsError):
        server.send([b"late"])


def test_a_missing_certificate_file_is_named(tmp_path):
    with pytest.raises(OSError, match="nope.pem"):
        server_tls_context(str(tmp_path / "nope.pem"), str(tmp_path / "key.pem"))
