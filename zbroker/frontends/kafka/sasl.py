"""SASL on the Kafka front door, sans-IO: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512.

Theory of operation.  Every connection of a Kafka listener whose cluster has
``[security] kafka_sasl`` gets a :class:`SaslSession`.  Until the session is
AUTHENTICATED the router serves only ApiVersions, SaslHandshake and SaslAuthenticate and
closes the connection on anything else (as Kafka's broker does).  The session's states
and what moves them (anything not in :data:`TRANSITIONS` fails the session; a failed
session's answer is sent and then the connection is closed)::

    HANDSHAKE     --SaslHandshake, mechanism enabled-->         AUTHENTICATE
    AUTHENTICATE  --SaslAuthenticate, PLAIN token checked-->    AUTHENTICATED
    AUTHENTICATE  --SaslAuthenticate, SCRAM client-first-->     EXCHANGE       (answers server-first)
    EXCHANGE      --SaslAuthenticate, SCRAM client-final-->     AUTHENTICATED  (answers server-final)

A SaslHandshake v0 (before Kafka 1.0, KIP-152) means the tokens that follow come *raw*:
size-prefixed, without a Kafka request header; :attr:`SaslSession.raw_tokens` tells the
connection so.  The exchange is the same; a failure there can only be a closed connection.

Credentials are the metadata image's SCRAM records (``image.security.users``: salt,
iterations, StoredKey, ServerKey as RFC 5802 defines them; never the password):

- SCRAM: the server side is scramp's.  The broker computes HMACs and hashes only; the
  client does the PBKDF2 (``Hi``) with the salt and iteration count the broker sends.
- PLAIN: the password is checked against the user's stored SCRAM credential (SHA-256's if
  the user has one): ``Hi(password, salt, i)`` -> ClientKey -> StoredKey, compared in
  constant time.  That is one PBKDF2 of ``i`` iterations on the broker's event loop per
  PLAIN login (docs/security.md gives the measured cost).
- An unknown user is answered as a known one, with a decoy credential derived from a
  per-broker secret and the name, so the exchange does not tell which users exist; it
  fails where a wrong password fails, with the same message.

Bounds on what an unauthenticated client makes the broker hold: a token of at most
:data:`MAX_SASL_TOKEN_BYTES`, requests of at most :data:`MAX_UNAUTHENTICATED_REQUEST_BYTES`
(the connection's framer), at most :data:`MAX_UNAUTHENTICATED_REQUESTS` requests, one
exchange at a time (each step is answered before the next is read), and
:data:`AUTH_TIMEOUT_MS` to finish (the transport closes the connection after it).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from typing import Callable

from scramp import ScramException, ScramMechanism
from scramp.core import Nonce
from scramp.utils import ServerError, saslprep

from zbroker.control.security_meta import MIN_SCRAM_ITERATIONS, SCRAM_MECHANISMS, ScramCredential
from zbroker.errors import ErrorCode, RequestError
from zbroker.security.users import SCRAM_HASHES, scram_keys

PLAIN = "PLAIN"
#: Largest SASL token accepted (a SCRAM message or a PLAIN token is well under 1 KiB).
MAX_SASL_TOKEN_BYTES = 8192
#: Largest request accepted before authentication (Kafka: sasl.server.max.receive.size).
MAX_UNAUTHENTICATED_REQUEST_BYTES = 16384
#: Requests a connection may send before it is authenticated (ApiVersions, retried at
#: another version, SaslHandshake, two SaslAuthenticates: five is what clients send).
MAX_UNAUTHENTICATED_REQUESTS = 16
#: Time from a connection's start (after TLS, if any) to the end of its authentication.
AUTH_TIMEOUT_MS = 10_000
#: The answer to a login with a wrong password and to one with an unknown user alike.
INVALID_CREDENTIALS = "Authentication failed: invalid credentials with SASL mechanism {}"



class SaslState(enum.Enum):
    HANDSHAKE = "handshake"
    AUTHENTICATE = "authenticate"
    EXCHANGE = "exchange"
    AUTHENTICATED = "authenticated"
    FAILED = "failed"


#: (state, step) -> the states the step may lead to; any other pair fails the session.
TRANSITIONS: dict[tuple[SaslState, str], frozenset[SaslState]] = {
    (SaslState.HANDSHAKE, "handshake"): frozenset({SaslState.AUTHENTICATE}),
    (SaslState.AUTHENTICATE, "authenticate"): frozenset({SaslState.EXCHANGE, SaslState.AUTHENTICATED}),
    (SaslState.EXCHANGE, "authenticate"): frozenset({SaslState.AUTHENTICATED}),
}


class SaslError(RequestError):
    """A SASL step the broker refuses: its Kafka error code and a message for the client."""


#: ``credentials(user)`` -> the user's credentials by mechanism, or None for no such user.
Credentials = Callable[[str], "dict[str, ScramCredential] | None"]


def salted_keys(mechanism: str, password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """``(StoredKey, ServerKey)`` of ``password`` (RFC 5802 §3; the password SASLprep'd as
    SCRAM clients do)."""
    salted = hashlib.pbkdf2_hmac(SCRAM_HASHES[mechanism], saslprep(password).encode(), salt, iterations)
    return scram_keys(mechanism, salted)


def verify_plain(credential: ScramCredential, password: str) -> bool:
    """Whether ``password`` is the one ``credential`` was made from (one PBKDF2 of the
    credential's iterations; the keys compared in constant time)."""
    try:
        stored_key, _server_key = salted_keys(credential.mechanism, password, credential.salt, credential.iterations)
    except ScramException:  # SASLprep refuses the password: it cannot be anyone's
        return False
    return hmac.compare_digest(stored_key, credential.stored_key)


def decoy_credential(secret: bytes, mechanism: str, user: str) -> ScramCredential:
    """A credential for a user that does not exist: stable per (broker secret, mechanism,
    user), so asking twice gives the same salt, and matching no password."""
    name = SCRAM_HASHES[mechanism]

    def derive(label: bytes) -> bytes:
        return hmac.new(secret, label + b"\0" + mechanism.encode() + b"\0" + user.encode(), name).digest()

    return ScramCredential(mechanism, derive(b"salt")[:32], MIN_SCRAM_ITERATIONS, derive(b"stored"), derive(b"server"))


class SaslSession:
    """One connection's SASL authentication (see the module's theory of operation).

    Args:
        mechanisms: the mechanisms offered, in the order the config names them.
        credentials: looks a user's credentials up in the current metadata image.
        secret: random bytes of this broker process (decoy credentials).
    """

    def __init__(self, mechanisms: tuple[str, ...], credentials: Credentials, secret: bytes) -> None:
        self.mechanisms = tuple(mechanisms)
        self._credentials = credentials
        self._secret = secret
        self.state = SaslState.HANDSHAKE
        self.mechanism: str | None = None
        self.raw_tokens = False  # after a v0 SaslHandshake: tokens come without a request header
        self.user: str | None = None
        self.principal: str | None = None
        self.failure: str | None = None  # why the session failed, for the log
        self.requests = 0
        self._verified: ScramCredential | None = None  # the credential the login was checked against
        self._candidate: ScramCredential | None = None  # SCRAM: the user's credential (None: a decoy)
        self._scram = None

    @property
    def authenticated(self) -> bool:
        return self.state is SaslState.AUTHENTICATED

    @property
    def failed(self) -> bool:
        return self.state is SaslState.FAILED

    def count_request(self) -> None:
        """One more request before authentication.

        Raises:
            SaslError: past :data:`MAX_UNAUTHENTICATED_REQUESTS`.
        """
        self.requests += 1
        if self.requests > MAX_UNAUTHENTICATED_REQUESTS:
            raise self._fail(ErrorCode.ILLEGAL_SASL_STATE,
                             f"{MAX_UNAUTHENTICATED_REQUESTS} requests without authenticating")

    def handshake(self, mechanism: str, version: int) -> None:
        """A SaslHandshake naming ``mechanism``.

        Raises:
            SaslError: UNSUPPORTED_SASL_MECHANISM, or ILLEGAL_SASL_STATE out of order.
        """
        self._step("handshake")
        if mechanism not in self.mechanisms:
            raise self._fail(ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                             f"SASL mechanism {mechanism[:64]!r} is not enabled; this listener offers "
                             f"{', '.join(self.mechanisms)}")
        self.mechanism = mechanism
        self.raw_tokens = version == 0
        self.state = SaslState.AUTHENTICATE

    def authenticate(self, token: bytes) -> bytes:
        """One SASL token from the client; returns the token to answer with.

        Raises:
            SaslError: SASL_AUTHENTICATION_FAILED (bad credentials or a malformed token),
                or ILLEGAL_SASL_STATE out of order.
        """
        self._step("authenticate")
        if len(token) > MAX_SASL_TOKEN_BYTES:
            raise self._fail(ErrorCode.SASL_AUTHENTICATION_FAILED,
                             f"a SASL token of {len(token)} bytes; at most {MAX_SASL_TOKEN_BYTES} are accepted")
        try:
            text = bytes(token).decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(ErrorCode.SASL_AUTHENTICATION_FAILED, f"the {self.mechanism} token is not UTF-8") from None
        if self.mechanism == PLAIN:
            return self._plain(text)
        if self.state is SaslState.AUTHENTICATE:
            return self._scram_first(text)
        return self._scram_final(text)

    def still_valid(self) -> bool:
        """Whether the credential this session logged in with is still the user's (a removed
        user, or one whose password was set again, no longer is)."""
        if not self.authenticated:
            return False
        current = (self._credentials(self.user) or {}).get(self._verified.mechanism)
        return current is not None and hmac.compare_digest(current.stored_key, self._verified.stored_key)

    def abort(self, why: str) -> None:
        """Fail the session (a bug while handling one of its steps)."""
        self._fail(ErrorCode.ILLEGAL_SASL_STATE, why)

    # -- steps -------------------------------------------------------------------

    def _step(self, step: str) -> None:
        if (self.state, step) not in TRANSITIONS:
            expected = " or ".join(sorted({s for (st, s) in TRANSITIONS if st is self.state})) or "nothing"
            raise self._fail(ErrorCode.ILLEGAL_SASL_STATE,
                             f"Sasl{step.capitalize()} in SASL state {self.state.value} (expected {expected})")

    def _fail(self, code: ErrorCode, message: str) -> SaslError:
        self.state = SaslState.FAILED
        self.failure = message
        self._scram = None
        return SaslError(code, message)

    def _invalid(self) -> SaslError:
        return self._fail(ErrorCode.SASL_AUTHENTICATION_FAILED, INVALID_CREDENTIALS.format(self.mechanism))

    def _succeed(self, user: str, credential: ScramCredential) -> None:
        self.user = user
        self.principal = f"User:{user}"
        self._verified = credential
        self.state = SaslState.AUTHENTICATED

    def _plain(self, text: str) -> bytes:
        parts = text.split("\0")
        if len(parts) != 3 or not parts[1]:
            raise self._fail(ErrorCode.SASL_AUTHENTICATION_FAILED,
                             "a PLAIN token is authzid NUL username NUL password, with a username")
        authzid, user, password = parts
        if authzid and authzid != user:
            raise self._fail(ErrorCode.SASL_AUTHENTICATION_FAILED,
                             "PLAIN: an authorization id other than the username is not allowed")
        creds = self._credentials(user) or {}
        credential = creds.get(SCRAM_MECHANISMS[0]) or creds.get(SCRAM_MECHANISMS[1])
        # an unknown user costs the same PBKDF2 as a known one
        checked = credential if credential is not None else decoy_credential(self._secret, SCRAM_MECHANISMS[0], user)
        if not verify_plain(checked, password) or credential is None:
            raise self._invalid()
        self._succeed(user, credential)
        return b""

    def _scram_first(self, text: str) -> bytes:
        mechanism = self.mechanism

        def lookup(user: str):
            self.user = user
            self._candidate = (self._credentials(user) or {}).get(mechanism)
            cred = self._candidate or decoy_credential(self._secret, mechanism, user)
            return cred.salt, cred.stored_key, cred.server_key, cred.iterations

        server = ScramMechanism(mechanism).make_server(lookup)
        try:
            server.set_client_first(text)
            reply = server.get_server_first()
        except ScramException as exc:
            raise self._fail(ErrorCode.SASL_AUTHENTICATION_FAILED, f"{mechanism} client-first message: {exc}"[:512]) from None
        self._scram = server
        self.state = SaslState.EXCHANGE
        return reply.encode()

    def _scram_final(self, text: str) -> bytes:
        server = self._scram
        _accept_librdkafka_nonce(server, text)
        try:
            server.set_client_final(text)
            reply = server.get_server_final()
        except ScramException as exc:
            if exc.server_error is ServerError.INVALID_PROOF or self._candidate is None:
                raise self._invalid() from None
            raise self._fail(ErrorCode.SASL_AUTHENTICATION_FAILED, f"{self.mechanism} client-final message: {exc}"[:512]) from None
        if self._candidate is None:  # cannot happen (nobody can prove a decoy's key), but never let a decoy in
            raise self._invalid()
        self._scram = None
        self._succeed(self.user, self._candidate)
        return reply.encode()


def _accept_librdkafka_nonce(server, client_final: str) -> None:
    """librdkafka before 2.6.1 (kcat 1.7.1 in Debian 12 links 2.0.2) sends its client nonce
    twice in the client-final message, ``r=`` client nonce + the server's whole nonce
    (librdkafka#4895; Kafka 3.8.1 to 3.9 accepted it).  Accept exactly that form: it still
    carries the server's fresh nonce, and the proof is checked over the message as sent.
    scramp compares the message's nonce with its ``nonce`` attribute, so that is set to it."""
    nonce = str(server.nonce)
    client_nonce = nonce[:len(nonce) - len(str(server.s_nonce))]
    for attribute in client_final.split(","):
        if attribute.startswith("r="):
            if attribute[2:] == client_nonce + nonce:
                server.nonce = Nonce(attribute[2:])
            return
