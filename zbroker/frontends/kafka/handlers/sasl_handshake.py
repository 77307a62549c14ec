"""SaslHandshake (key 17): the client names its SASL mechanism.

A SASL route: served before authentication, and called with the connection's
:class:`~zbroker.frontends.kafka.sasl.SaslSession` (None on a listener without SASL) in
place of the app.  v1 is followed by SaslAuthenticate requests; v0 (before Kafka 1.0) by
raw tokens, which the connection hands to the session itself.  An unknown mechanism is
answered UNSUPPORTED_SASL_MECHANISM with the mechanisms offered, then the connection is
closed; a handshake on a listener without SASL, or after authentication (there is no
re-authentication: the session lifetime is 0), is ILLEGAL_SASL_STATE and the connection
goes on.
"""

from __future__ import annotations

from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.frontends.kafka.sasl import SaslError

API_KEY = 17
VERSIONS = (0, 1)


def sasl_handshake(session, ctx, request, version, now_ms):
    if session is None or session.authenticated:
        return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "mechanisms": session.mechanisms if session else ()}
    try:
        session.handshake(request.mechanism, version)
    except SaslError as exc:
        return {"error_code": exc.code, "mechanisms": session.mechanisms}
    return {"error_code": 0, "mechanisms": session.mechanisms}


def error(request, version, code, message):
    return {"error_code": code, "mechanisms": ()}


ROUTE = KafkaRoute(API_KEY, "SaslHandshake", VERSIONS, sasl_handshake, error=error, sasl=True)
