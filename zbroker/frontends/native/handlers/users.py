"""upsert_user, remove_user, list_users: SCRAM credentials for the Kafka door's SASL.

The client sends each credential already computed (salt, iterations, StoredKey, ServerKey),
never the password; the handler checks the name and each credential, builds the security
records and commits them through the controller (``TopicAdmin.alter_security``).  Changing
users needs ALTER on the cluster, listing them DESCRIBE; ``list_users`` answers names,
mechanisms and iteration counts, never keys or salts.
"""

from __future__ import annotations

from zbroker import protocol as P
from zbroker.control.security_meta import (
    REMOVE_SCRAM_CREDENTIAL_RECORD,
    SCRAM_CREDENTIAL_RECORD,
    check_record,
)
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.native.router import Route
from zbroker.security import CLUSTER, Operation
from zbroker.security.users import check_user_name


def _user(name: str) -> str:
    try:
        return check_user_name(name)
    except ValueError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None


def upsert_user(app, ctx, fields, payloads, now_ms):
    name = _user(fields["user"])
    if not fields["credentials"]:
        raise RequestError(ErrorCode.INVALID_REQUEST, "field 'credentials' is empty: give at least one mechanism's")
    records = [{"type": REMOVE_SCRAM_CREDENTIAL_RECORD, "name": name, "mechanism": None}]  # the set replaces the old
    for i, cred in enumerate(fields["credentials"]):
        record = {"type": SCRAM_CREDENTIAL_RECORD, "name": name, **cred}
        try:
            check_record(record)
        except ValueError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"credentials[{i}]: {exc}") from None
        records.append(record)
    return app.admin.alter_security(ctx, AlterSecurity(records), now_ms)


def remove_user(app, ctx, fields, payloads, now_ms):
    name = fields["user"]
    if name not in app.control.image.security.users:
        raise RequestError(ErrorCode.RESOURCE_NOT_FOUND, f"no user {P.clip(name)}")
    return app.admin.alter_security(ctx, AlterSecurity([{"type": REMOVE_SCRAM_CREDENTIAL_RECORD, "name": name,
                                                          "mechanism": None}]), now_ms)


def list_users(app, ctx, fields, payloads, now_ms):
    return app.control.image.security.users


def list_users_reply(users: dict):
    return {"users": [{"user": name, "mechanisms": [{"mechanism": m, "iterations": c.iterations}
                                                    for m, c in sorted(creds.items())]}
                      for name, creds in sorted(users.items())]}, []


_ALTER = [(Operation.ALTER, CLUSTER)]
_DESCRIBE = [(Operation.DESCRIBE, CLUSTER)]

ROUTES = [
    Route(P.UPSERT_USER, upsert_user, access=lambda f: _ALTER),
    Route(P.REMOVE_USER, remove_user, access=lambda f: _ALTER),
    Route(P.LIST_USERS, list_users, list_users_reply, access=lambda f: _DESCRIBE),
]
