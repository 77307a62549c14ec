"""DescribeClientQuotas (key 48, KIP-546): the byte-rate quotas of users.

zbroker keeps quotas per principal (``User:NAME``) and one default (``<default>``), so
the entities are of type ``user`` only: a user entity's name is the principal's NAME, and
the default's name is null.  Keys are Kafka's: ``producer_byte_rate`` and
``consumer_byte_rate`` (zbroker's ``produce_bytes_per_s`` and ``fetch_bytes_per_s``).

A filter component matches a user exactly (``match_type`` 0), the default (1) or any user
(2); a component of another entity type (``client-id``, ``ip``) matches nothing here,
since no zbroker quota has one.  ``strict`` asks for entities with no other component
types than the filter's: a filter without a ``user`` component then matches nothing.
A component of an unknown match type, or two of one entity type, is INVALID_REQUEST.
"""

from __future__ import annotations

from zbroker.control.client_quotas import quotas_of
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation

API_KEY = 48
VERSIONS = (0, 1)
USER = "user"
MATCH_EXACT, MATCH_DEFAULT, MATCH_ANY = 0, 1, 2
#: Kafka's quota keys -> zbroker's.
KEYS = {"producer_byte_rate": "produce_bytes_per_s", "consumer_byte_rate": "fetch_bytes_per_s"}
DEFAULT_PRINCIPAL = "<default>"


def user_name(principal: str) -> str | None:
    """The ``user`` entity name of a quota principal (None: the default)."""
    return None if principal == DEFAULT_PRINCIPAL else principal[len("User:"):]


def user_principal(name: str | None) -> str:
    """The quota principal of a ``user`` entity name (None: the default)."""
    return DEFAULT_PRINCIPAL if name is None else f"User:{name}"


def _matches(components, strict: bool):
    """``matches(principal) -> bool`` for a filter."""
    types = [c.entity_type for c in components]
    if len(set(types)) != len(types):
        raise RequestError(ErrorCode.INVALID_REQUEST, "a filter names an entity type more than once")
    user = None
    for c in components:
        if c.match_type not in (MATCH_EXACT, MATCH_DEFAULT, MATCH_ANY):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown match type {c.match_type}")
        if c.match_type == MATCH_EXACT and c.match is None:
            raise RequestError(ErrorCode.INVALID_REQUEST, "an exact match needs a name")
        if c.entity_type != USER:
            return lambda principal: False  # no zbroker quota has a component of another type
        user = c
    if user is None:
        return lambda principal: not strict
    if user.match_type == MATCH_ANY:
        return lambda principal: True
    wanted = user_principal(user.match if user.match_type == MATCH_EXACT else None)
    return lambda principal: principal == wanted


def describe_client_quotas(app, ctx, request, version, now_ms):
    matches = _matches(request.components, request.strict)
    entries = []
    for principal, entry in quotas_of(app.control.image.security):
        if not (principal == DEFAULT_PRINCIPAL or principal.startswith("User:")) or not matches(principal):
            continue
        values = [{"key": key, "value": float(getattr(entry, field))} for key, field in KEYS.items()
                  if getattr(entry, field) is not None]
        entries.append({"entity": [{"entity_type": USER, "entity_name": user_name(principal)}], "values": values})
    return {"error_code": 0, "entries": entries}


def _error(request, version, code, message):
    return {"error_code": code, "error_message": message, "entries": None}


ROUTE = KafkaRoute(API_KEY, "DescribeClientQuotas", VERSIONS, describe_client_quotas, error=_error,
                   access=lambda request: [(Operation.DESCRIBE, CLUSTER)])
