"""AlterClientQuotas (key 49, KIP-546): set and remove users' byte-rate quotas.

Each entry names one entity, a ``user`` (name: ``User:NAME``'s NAME; null: the default
of every user without one), and operations on ``producer_byte_rate`` /
``consumer_byte_rate`` (see :mod:`.describe_client_quotas`).  Every entry is answered on
its own: an entity with another entity type (``client-id``: zbroker keeps quotas per user
only), an entity named twice, another key or a value below 1 gets INVALID_REQUEST; the
valid ones are committed together through the controller, as the native door's
``alter_quotas`` does, and answered once committed (``validate_only``: checked, not
committed).
"""

from __future__ import annotations

from zbroker.control.client_quotas import quota_change
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka.datapath import then
from zbroker.frontends.kafka.handlers.describe_client_quotas import KEYS, USER, user_principal
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation

API_KEY = 49
VERSIONS = (0, 1)


def _entity(entry) -> list[dict]:
    return [{"entity_type": e.entity_type, "entity_name": e.entity_name} for e in entry.entity]


def _record(app, entry, seen: set) -> dict:
    if len(entry.entity) != 1 or entry.entity[0].entity_type != USER:
        raise RequestError(ErrorCode.INVALID_REQUEST, "zbroker keeps quotas per user only: an entity is one 'user' component")
    principal = user_principal(entry.entity[0].entity_name)
    if principal in seen:
        raise RequestError(ErrorCode.INVALID_REQUEST, "an entity is named more than once")
    seen.add(principal)
    ops = []
    for op in entry.ops:
        if op.key not in KEYS:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"unsupported quota key {op.key!r:.64} (zbroker has {', '.join(KEYS)})")
        ops.append((KEYS[op.key], op.value, op.remove))
    return quota_change(app.control.image.security, principal, ops)


def alter_client_quotas(app, ctx, request, version, now_ms):
    outcomes, records, seen = [], [], set()
    for entry in request.entries:
        try:
            records.append(_record(app, entry, seen))
            outcomes.append(None)  # committed with the others
        except RequestError as exc:
            outcomes.append((int(exc.code), exc.message))

    def answer(_committed=None, failure: tuple[int, str | None] = (0, None)) -> dict:
        rows = []
        for entry, outcome in zip(request.entries, outcomes):
            code, message = outcome or failure
            rows.append({"entity": _entity(entry), "error_code": code, "error_message": message})
        return {"entries": rows}

    if request.validate_only or not records:
        return answer()
    try:
        committed = app.admin.alter_security(ctx, AlterSecurity(records), now_ms)
    except RequestError as exc:
        return answer(failure=(int(exc.code), exc.message))
    return then(committed, answer)


def _error(request, version, code, message):
    return {"entries": [{"entity": _entity(entry), "error_code": code, "error_message": message} for entry in request.entries]}


ROUTE = KafkaRoute(API_KEY, "AlterClientQuotas", VERSIONS, alter_client_quotas, error=_error,
                   access=lambda request: [(Operation.ALTER, CLUSTER)])
