"""SaslAuthenticate (key 36): one SASL token each way (KIP-152).

A SASL route (see sasl_handshake.py).  PLAIN takes one request, SCRAM two (client-first,
then client-final).  A refused token is answered SASL_AUTHENTICATION_FAILED (or
ILLEGAL_SASL_STATE out of order) with a message, then the connection is closed.  The
session lifetime answered (v1+) is 0: no re-authentication (KIP-368) is asked for.
"""

from __future__ import annotations

from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.frontends.kafka.sasl import SaslError

API_KEY = 36
VERSIONS = (0, 2)


def sasl_authenticate(session, ctx, request, version, now_ms):
    if session is None or session.authenticated:
        why = "SASL is not enabled on this listener" if session is None else "already authenticated"
        return {"error_code": ErrorCode.ILLEGAL_SASL_STATE, "error_message": why}
    try:
        token = session.authenticate(request.auth_bytes)
    except SaslError as exc:
        return {"error_code": exc.code, "error_message": exc.message}
    return {"error_code": 0, "auth_bytes": token, "session_lifetime": 0}


def error(request, version, code, message):
    return {"error_code": code, "error_message": message}


ROUTE = KafkaRoute(API_KEY, "SaslAuthenticate", VERSIONS, sasl_authenticate, error=error, sasl=True)
