"""describe_quotas, alter_quotas: client byte-rate quotas in the metadata log.

A quota is a ``quota`` record (``control.security_meta``) per principal (``User:NAME``)
or for ``<default>``; ``alter_quotas`` applies Kafka's AlterClientQuotas operations (set a
key, remove a key) to what this broker's image holds (``control.client_quotas``) and
commits the records through the controller (``TopicAdmin.alter_security``).
"""

from __future__ import annotations

from dataclasses import asdict

from zbroker import protocol as P
from zbroker.control.client_quotas import quota_change, quotas_of
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import RequestError
from zbroker.frontends.native.router import Route
from zbroker.security import CLUSTER, Operation


def describe_quotas(app, ctx, fields, payloads, now_ms):
    return quotas_of(app.control.image.security, fields["principals"])


def describe_quotas_reply(quotas):
    return {"quotas": [{"principal": principal, **asdict(entry)} for principal, entry in quotas]}, []


def _record(app, i: int, entry: dict) -> dict:
    try:
        return quota_change(app.control.image.security, entry["principal"],
                            [(op["key"], op["value"], op["remove"]) for op in entry["ops"]])
    except RequestError as exc:
        raise RequestError(exc.code, f"entries[{i}]: {exc.message}") from None


def alter_quotas(app, ctx, fields, payloads, now_ms):
    records = [_record(app, i, entry) for i, entry in enumerate(fields["entries"])]
    if fields["validate_only"] or not records:
        return None
    return app.admin.alter_security(ctx, AlterSecurity(records), now_ms)


ROUTES = [
    Route(P.DESCRIBE_QUOTAS, describe_quotas, describe_quotas_reply, access=lambda f: [(Operation.DESCRIBE, CLUSTER)]),
    Route(P.ALTER_QUOTAS, alter_quotas, access=lambda f: [(Operation.ALTER, CLUSTER)]),
]
