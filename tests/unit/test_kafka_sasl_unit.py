"""The Kafka door's SASL, sans-IO: SCRAM and PLAIN verification, the session's state machine,
and the router's gate on a connection (no sockets; the client side is scramp's)."""

from __future__ import annotations

import io
import struct

import pytest
import scramp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_reader, entity_writer

from zbroker.context import ANONYMOUS
from zbroker.control.security_meta import ScramCredential
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka import codec
from zbroker.frontends.kafka.handlers import ROUTES
from zbroker.frontends.kafka.router import KafkaConnection, KafkaRoute, KafkaRouter
from zbroker.frontends.kafka.sasl import (
    AUTH_TIMEOUT_MS,
    INVALID_CREDENTIALS,
    MAX_SASL_TOKEN_BYTES,
    MAX_UNAUTHENTICATED_REQUEST_BYTES,
    MAX_UNAUTHENTICATED_REQUESTS,
    SaslError,
    SaslSession,
    SaslState,
    decoy_credential,
    salted_keys,
    verify_plain,
)
from zbroker.metrics import RequestMetrics
from zbroker.security import AllowAll

pytestmark = pytest.mark.timeout(60)

SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")
ALL = (*SCRAM, "PLAIN")
SECRET = b"s" * 32


def credentials(password: str, iterations: int = 4096) -> dict[str, ScramCredential]:
    """What `zbroker users add` sends: scramp's credentials for both mechanisms."""
    out = {}
    for mechanism in SCRAM:
        salt, stored, server, count = scramp.ScramMechanism(mechanism).make_auth_info(password, iteration_count=iterations)
        out[mechanism] = ScramCredential(mechanism, salt, count, stored, server)
    return out


@pytest.fixture(scope="module")
def users() -> dict:
    return {"alice": credentials("wonderland"), "bob": credentials("I\u00adX")}  # a soft hyphen: SASLprep drops it


def session(users, mechanisms=ALL) -> SaslSession:
    return SaslSession(mechanisms, users.get, SECRET)


def scram_login(s: SaslSession, mechanism: str, user: str, password: str, mangle=None) -> bytes:
    """A whole SCRAM exchange with scramp's client; returns the server-final message."""
    s.handshake(mechanism, 1)
    client = scramp.ScramClient([mechanism], user, password)
    client.set_server_first(s.authenticate(client.get_client_first().encode()).decode())
    final = client.get_client_final()
    final_reply = s.authenticate((mangle(final) if mangle else final).encode())
    client.set_server_final(final_reply.decode())  # the server proved it knows the ServerKey
    return final_reply


# -- SCRAM -------------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", SCRAM)
def test_scram_logs_a_user_in_with_the_right_password(users, mechanism):
    s = session(users)
    scram_login(s, mechanism, "alice", "wonderland")
    assert s.authenticated and s.principal == "User:alice" and s.still_valid()


@pytest.mark.parametrize("mechanism", SCRAM)
@pytest.mark.parametrize("user, password", [("alice", "wonderlanD"), ("mallory", "wonderland")])
def test_a_wrong_password_and_an_unknown_user_fail_alike_at_the_proof(users, mechanism, user, password):
    s = session(users)
    with pytest.raises(SaslError) as err:
        scram_login(s, mechanism, user, password)
    assert err.value.code == ErrorCode.SASL_AUTHENTICATION_FAILED
    assert err.value.message == INVALID_CREDENTIALS.format(mechanism)
    assert s.state is SaslState.FAILED and s.principal is None


def test_an_unknown_user_gets_a_stable_decoy_salt_that_tells_nothing(users):
    def server_first(user):
        s = session(users)
        s.handshake("SCRAM-SHA-256", 1)
        reply = s.authenticate(scramp.ScramClient(["SCRAM-SHA-256"], user, "x").get_client_first().encode()).decode()
        return dict(kv.split("=", 1) for kv in reply.split(","))

    first, again, other = server_first("mallory"), server_first("mallory"), server_first("trudy")
    assert first["s"] == again["s"] != other["s"]  # asking twice cannot tell a decoy from a user
    assert first["i"] == "4096" and len(first["s"]) == len(server_first("alice")["s"])
    decoy = decoy_credential(SECRET, "SCRAM-SHA-512", "mallory")
    assert len(decoy.stored_key) == len(decoy.server_key) == 64


def test_librdkafkas_repeated_client_nonce_is_accepted_and_no_other_nonce(users):
    # librdkafka < 2.6.1 (kcat in Debian 12) sends r=<client nonce><server nonce>, where the
    # server nonce already starts with the client nonce (librdkafka#4895)
    def repeat_client_nonce(final: str) -> str:
        attrs = dict(kv.split("=", 1) for kv in final.split(","))
        cnonce = attrs["r"][:len(attrs["r"]) - 64]  # scramp's server nonce: 64 hex digits
        return final.replace(f"r={attrs['r']}", f"r={cnonce}{attrs['r']}")

    # the client's proof covers the message as sent, so the test's client must sign the
    # mangled nonce: build the final message by hand
    s = session(users)
    s.handshake("SCRAM-SHA-256", 1)
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "wonderland")
    client.set_server_first(s.authenticate(client.get_client_first().encode()).decode())
    client.nonce = scramp.core.Nonce(repeat_client_nonce(f"r={client.nonce}").split("=", 1)[1])
    s.authenticate(client.get_client_final().encode())
    assert s.authenticated

    s = session(users)
    with pytest.raises(SaslError, match="nonce"):
        scram_login(s, "SCRAM-SHA-256", "alice", "wonderland", mangle=lambda final: final.replace("r=", "r=x", 1))


def test_a_malformed_scram_message_fails_with_a_message_naming_it(users):
    s = session(users)
    s.handshake("SCRAM-SHA-512", 1)
    with pytest.raises(SaslError, match="SCRAM-SHA-512 client-first message") as err:
        s.authenticate(b"this is not scram")
    assert err.value.code == ErrorCode.SASL_AUTHENTICATION_FAILED and s.failed


# -- PLAIN -------------------------------------------------------------------------------

def test_plain_checks_the_password_against_the_stored_scram_credential(users):
    s = session(users)
    s.handshake("PLAIN", 1)
    assert s.authenticate(b"\0alice\0wonderland") == b"" and s.principal == "User:alice"
    s = session(users)
    s.handshake("PLAIN", 1)
    assert s.authenticate(b"bob\0bob\0IX") == b"" and s.principal == "User:bob"  # SASLprep'd, as scramp stored it


@pytest.mark.parametrize("token, message", [
    (b"\0alice\0wonderlanD", INVALID_CREDENTIALS.format("PLAIN")),
    (b"\0mallory\0wonderland", INVALID_CREDENTIALS.format("PLAIN")),
    (b"bob\0alice\0wonderland", "authorization id"),
    (b"alice wonderland", "authzid NUL username NUL password"),
    (b"\0\0wonderland", "authzid NUL username NUL password"),
    (b"\0alice\0\xff\xfe", "not UTF-8"),
    (b"\0alice\0" + b"x" * MAX_SASL_TOKEN_BYTES, f"at most {MAX_SASL_TOKEN_BYTES}"),
])
def test_plain_refusals_name_what_was_wrong(users, token, message):
    s = session(users)
    s.handshake("PLAIN", 1)
    with pytest.raises(SaslError, match=message):
        s.authenticate(token)
    assert s.failed


def test_verify_plain_and_salted_keys_agree_with_scramp(users):
    cred = users["alice"]["SCRAM-SHA-512"]
    assert salted_keys("SCRAM-SHA-512", "wonderland", cred.salt, cred.iterations) == (cred.stored_key, cred.server_key)
    assert verify_plain(cred, "wonderland") and not verify_plain(cred, "wonderland ")
    assert not verify_plain(cred, "\u0007bell")  # SASLprep refuses control characters: no one's password


# -- the state machine -----------------------------------------------------------------------

def test_steps_out_of_order_fail_the_session(users):
    s = session(users)
    with pytest.raises(SaslError, match="in SASL state handshake") as err:
        s.authenticate(b"\0alice\0wonderland")
    assert err.value.code == ErrorCode.ILLEGAL_SASL_STATE and s.failed
    s = session(users)
    s.handshake("PLAIN", 1)
    with pytest.raises(SaslError, match="SaslHandshake in SASL state authenticate"):
        s.handshake("PLAIN", 1)
    s = session(users)
    s.handshake("PLAIN", 1)
    s.authenticate(b"\0alice\0wonderland")
    with pytest.raises(SaslError):  # after success: no more steps
        s.authenticate(b"\0alice\0wonderland")


def test_a_mechanism_not_offered_is_refused_with_the_offer(users):
    s = session(users, mechanisms=("SCRAM-SHA-512",))
    with pytest.raises(SaslError, match="offers SCRAM-SHA-512") as err:
        s.handshake("PLAIN", 1)
    assert err.value.code == ErrorCode.UNSUPPORTED_SASL_MECHANISM and s.failed


def test_requests_before_authentication_are_counted(users):
    s = session(users)
    for _ in range(MAX_UNAUTHENTICATED_REQUESTS):
        s.count_request()
    with pytest.raises(SaslError, match="without authenticating"):
        s.count_request()


def test_a_removed_or_replaced_credential_ends_the_session():
    table = {"alice": credentials("wonderland")}
    s = SaslSession(ALL, table.get, SECRET)
    scram_login(s, "SCRAM-SHA-512", "alice", "wonderland")
    assert s.still_valid()
    table["alice"] = {**table["alice"], "SCRAM-SHA-256": credentials("other")["SCRAM-SHA-256"]}
    assert s.still_valid()  # another mechanism's credential changed: not the one used
    table["alice"] = credentials("wonderland")  # the same password, set again: new salt, new keys
    assert not s.still_valid()
    del table["alice"]
    assert not s.still_valid()


# -- the router's gate on a connection ----------------------------------------------------

class Wire:
    """A transport that records what the connection does."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.lingered: bool | None = None  # None: closed at once (close), else close_after_write's linger
        self.deadline: tuple[int, str] | None = None

    def write(self, data):
        self.sent += data

    def close(self):
        self.closed = True

    def close_after_write(self, linger=False):
        self.closed = True
        self.lingered = linger

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def set_deadline(self, delay_ms, why):
        self.deadline = (delay_ms, why)

    def clear_deadline(self):
        self.deadline = None


def connection(users, max_request_bytes: int = 1 << 20) -> KafkaConnection:
    def metadata(app, ctx, request, version, now_ms):
        return {"cluster_id": ctx.principal}  # tells the test who asked

    routes = [r for r in ROUTES if r.name in ("SaslHandshake", "SaslAuthenticate", "ApiVersions")]
    routes.append(KafkaRoute(3, "Metadata", (12, 12), metadata))
    router = KafkaRouter(None, routes, AllowAll(), RequestMetrics())
    return KafkaConnection(router, 1, "peer", Wire(), max_request_bytes, sasl=session(users))


def frame(api_key: int, version: int, cid: int, fields: dict | None = None) -> bytes:
    schema = codec.request_schema(api_key, version)
    out = io.BytesIO()
    entity_writer(schema.__header_schema__)(out, schema.__header_schema__(
        request_api_key=api_key, request_api_version=version, correlation_id=cid, client_id="t"))
    entity_writer(schema)(out, codec.build(schema, fields or {}))
    return struct.pack(">i", out.tell()) + out.getvalue()


def reply(data: bytes, api_key: int, version: int):
    schema = codec.response_schema(api_key, version)
    start = 9 if schema.__flexible__ and api_key != 18 else 8
    return entity_reader(schema)(data, start)[0]


def plain_login(conn: KafkaConnection, token: bytes = b"\0alice\0wonderland"):
    conn.data_received(frame(18, 3, 1) + frame(17, 1, 2, {"mechanism": "PLAIN"})
                       + frame(36, 2, 3, {"auth_bytes": token}), 0)
    return [reply(conn.transport.sent[i], key, v) for i, (key, v) in enumerate([(18, 3), (17, 1), (36, 2)])]


def test_a_connection_is_served_once_authenticated_with_a_deadline_until_then(users):
    conn = connection(users)
    assert conn.transport.deadline == (AUTH_TIMEOUT_MS, f"SASL authentication not finished within {AUTH_TIMEOUT_MS} ms")
    versions, handshake, auth = plain_login(conn)
    assert {17, 18, 36} <= {k.api_key for k in versions.api_keys}
    assert handshake.error_code.value == 0 and list(handshake.mechanisms) == list(ALL)
    assert auth.error_code.value == 0 and conn.principal == "User:alice" and conn.transport.deadline is None
    conn.data_received(frame(3, 12, 4), 0)
    assert reply(conn.transport.sent[-1], 3, 12).cluster_id == "User:alice" and not conn.transport.closed
    assert conn.framer.max_size == 1 << 20  # the small pre-authentication limit is lifted


def test_any_other_request_before_authentication_closes_without_an_answer(users):
    conn = connection(users)
    conn.data_received(frame(3, 12, 1), 0)
    assert conn.transport.closed and conn.transport.sent == [] and conn.principal == ANONYMOUS


def test_a_failed_login_is_answered_then_closed(users):
    conn = connection(users)
    _versions, _handshake, auth = plain_login(conn, b"\0alice\0nope")
    assert auth.error_code.value == ErrorCode.SASL_AUTHENTICATION_FAILED
    assert auth.error_message == INVALID_CREDENTIALS.format("PLAIN")
    assert conn.transport.closed and conn.principal == ANONYMOUS


def test_authenticate_before_handshake_is_answered_illegal_state_then_closed(users):
    conn = connection(users)
    conn.data_received(frame(36, 1, 1, {"auth_bytes": b"\0alice\0wonderland"}), 0)
    answer = reply(conn.transport.sent[0], 36, 1)
    assert answer.error_code.value == ErrorCode.ILLEGAL_SASL_STATE and "expected handshake" in answer.error_message
    assert conn.transport.closed


def test_a_request_above_the_pre_authentication_size_closes_before_buffering(users):
    conn = connection(users)
    conn.data_received(struct.pack(">i", MAX_UNAUTHENTICATED_REQUEST_BYTES + 1), 0)
    assert conn.transport.closed and conn.framer.buffered == 4  # the size prefix, nothing more


def test_too_many_requests_before_authentication_close(users):
    conn = connection(users)
    conn.data_received(b"".join(frame(18, 3, i) for i in range(MAX_UNAUTHENTICATED_REQUESTS + 1)), 0)
    assert len(conn.transport.sent) == MAX_UNAUTHENTICATED_REQUESTS and conn.transport.closed


def test_a_removed_user_is_closed_at_its_next_request():
    table = {"alice": credentials("wonderland")}
    conn = connection(table)
    conn.sasl = SaslSession(ALL, table.get, SECRET)
    plain_login(conn)
    del table["alice"]
    conn.data_received(frame(3, 12, 4), 0)
    assert conn.transport.closed and len(conn.transport.sent) == 3


def test_the_v0_handshake_takes_raw_tokens(users):
    conn = connection(users)
    conn.data_received(frame(17, 0, 1, {"mechanism": "SCRAM-SHA-256"}), 0)
    assert reply(conn.transport.sent[0], 17, 0).error_code.value == 0
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "wonderland")

    def raw(token: str) -> str:
        data = token.encode()
        conn.data_received(struct.pack(">i", len(data)) + data, 0)
        answer = conn.transport.sent[-1]
        assert struct.unpack_from(">i", answer)[0] == len(answer) - 4
        return answer[4:].decode()

    client.set_server_first(raw(client.get_client_first()))
    client.set_server_final(raw(client.get_client_final()))
    assert conn.principal == "User:alice"
    conn.data_received(frame(3, 12, 4), 0)  # then Kafka requests again
    assert reply(conn.transport.sent[-1], 3, 12).cluster_id == "User:alice"


def test_a_refused_raw_token_closes_without_an_answer(users):
    conn = connection(users)
    conn.data_received(frame(17, 0, 1, {"mechanism": "PLAIN"}), 0)
    conn.data_received(struct.pack(">i", 12) + b"\0alice\0wrong", 0)
    assert conn.transport.closed and len(conn.transport.sent) == 1
    assert conn.transport.lingered is False  # no answer for the client to read: closed once written


@pytest.mark.parametrize("requests", [
    [frame(17, 1, 1, {"mechanism": "PLAIN"}), frame(36, 2, 2, {"auth_bytes": b"\0alice\0nope"})],  # wrong password
    [frame(17, 1, 1, {"mechanism": "SCRAM-SHA-256"}), frame(36, 2, 2, {"auth_bytes": b"n,,n=nobody,r=abc"}),
     frame(36, 2, 3, {"auth_bytes": b"c=biws,r=abc,p=AAAA"})],  # an unknown user: refused at its client-final message
    [frame(17, 1, 1, {"mechanism": "GSSAPI"})],  # a mechanism not offered
    [frame(36, 2, 1, {"auth_bytes": b"\0alice\0wonderland"})],  # SaslAuthenticate before SaslHandshake
])
def test_a_refused_sasl_step_is_answered_then_closed_lingering(users, requests):
    # lingering: the client reads the error before the connection ends (kafka-python drops an
    # answer that arrives together with the end of the stream, and reports a lost connection)
    conn = connection(users)
    for request in requests:
        conn.data_received(request, 0)
    assert conn.transport.closed and conn.transport.lingered is True
    assert len(conn.transport.sent) == len(requests)
    key, version = struct.unpack_from(">hh", requests[-1], 4)
    assert reply(conn.transport.sent[-1], key, version).error_code.value != 0


def test_closes_without_an_answer_do_not_linger(users):
    conn = connection(users)
    conn.data_received(frame(3, 12, 1), 0)  # a request before authentication: no answer, closed at once
    assert conn.transport.closed and conn.transport.sent == [] and conn.transport.lingered is None


def test_sasl_requests_on_a_listener_without_sasl_are_illegal_state_and_the_connection_goes_on():
    router = KafkaRouter(None, [r for r in ROUTES if r.name in ("SaslHandshake", "SaslAuthenticate")], AllowAll(),
                         RequestMetrics())
    conn = KafkaConnection(router, 1, "peer", Wire(), 1 << 20)
    conn.data_received(frame(17, 1, 1, {"mechanism": "PLAIN"}) + frame(36, 2, 2, {"auth_bytes": b"x"}), 0)
    assert reply(conn.transport.sent[0], 17, 1).error_code.value == ErrorCode.ILLEGAL_SASL_STATE
    assert reply(conn.transport.sent[1], 36, 2).error_code.value == ErrorCode.ILLEGAL_SASL_STATE
    assert not conn.transport.closed


# -- fuzzing the exchange (bounded budget) ------------------------------------------------------

STEPS = st.one_of(
    st.binary(max_size=64).map(lambda b: struct.pack(">i", len(b)) + b),  # raw frames, raw tokens
    st.builds(lambda m, v: frame(17, v, 1, {"mechanism": m}), st.sampled_from([*ALL, "GSSAPI", ""]), st.integers(0, 1)),
    st.builds(lambda t, v: frame(36, v, 2, {"auth_bytes": t}),
              st.one_of(st.binary(max_size=200), st.sampled_from([b"\0alice\0wonderland", b"n,,n=alice,r=abc",
                                                                   b"c=biws,r=abc,p=AAAA"])), st.integers(0, 2)),
    st.builds(lambda v: frame(18, v, 3), st.integers(0, 3)),
    st.just(frame(3, 12, 4)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(STEPS, max_size=8), st.integers(1, 50))
def test_any_sequence_of_sasl_input_is_answered_boundedly_or_closed(users, steps, chunk):
    conn = connection(users)
    stream = b"".join(steps)
    for i in range(0, len(stream), chunk):
        conn.data_received(stream[i:i + chunk], 0)  # never raises
        if conn.transport.closed:
            break
    assert sum(len(r) for r in conn.transport.sent) <= 4096 * (len(steps) + 1)  # replies stay small
    if conn.principal != ANONYMOUS:
        assert conn.sasl.authenticated and conn.principal == "User:alice"  # only a real login gets a principal
    assert conn.framer.buffered <= MAX_UNAUTHENTICATED_REQUEST_BYTES + 4 or conn.sasl.authenticated
