"""AlterUserScramCredentials (key 51, KIP-554): Kafka admin clients setting SCRAM credentials.

Deletions name a user and a mechanism (1 = SCRAM-SHA-256, 2 = SCRAM-SHA-512); upsertions add
a salt, an iteration count and the SaltedPassword, from which the broker derives StoredKey and
ServerKey (docs/security.md) and stores those, never the SaltedPassword.  Each user is all or
nothing: one bad operation and none of that user's are applied.  Per user: a mechanism not
known is UNSUPPORTED_SASL_MECHANISM; a bad name, iteration count (4096 to 1048576), salt or
SaltedPassword length UNACCEPTABLE_CREDENTIAL; a (user, mechanism) twice DUPLICATE_RESOURCE;
deleting a credential that does not exist RESOURCE_NOT_FOUND.  The rest is committed through
the controller in one change, answered once committed.  Needs ALTER on the cluster (what
`zbroker users add` needs).  Unlike `zbroker users add`, this API sends the SaltedPassword,
which is enough to log in: use it over TLS.
"""

from __future__ import annotations

from collections import Counter

from zbroker.control.security_meta import REMOVE_SCRAM_CREDENTIAL_RECORD, SCRAM_CREDENTIAL_RECORD, check_record
from zbroker.control.topicadmin import AlterSecurity
from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.datapath import then
from zbroker.frontends.kafka.handlers.describe_user_scram_credentials import MECHANISM_IDS
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation
from zbroker.security.users import check_user_name, scram_keys

API_KEY = 51
VERSIONS = (0, 0)
_MECHANISMS = {number: name for name, number in MECHANISM_IDS.items()}
_DIGEST_BYTES = {"SCRAM-SHA-256": 32, "SCRAM-SHA-512": 64}


class _Refused(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _record(op, upsert: bool, users: dict, counts: Counter) -> dict:
    """The security record of one operation.

    Raises:
        _Refused: what is wrong with it.
    """
    mechanism = _MECHANISMS.get(op.mechanism)
    if mechanism is None:
        raise _Refused(ErrorCode.UNSUPPORTED_SASL_MECHANISM, f"unknown SCRAM mechanism {op.mechanism} "
                                                             f"(1: SCRAM-SHA-256, 2: SCRAM-SHA-512)")
    try:
        check_user_name(op.name)
    except ValueError as exc:
        raise _Refused(ErrorCode.UNACCEPTABLE_CREDENTIAL, str(exc)) from None
    if counts[(op.name, op.mechanism)] > 1:
        raise _Refused(ErrorCode.DUPLICATE_RESOURCE, f"{mechanism} of user {op.name!r} is changed more than once")
    if not upsert:
        if mechanism not in users.get(op.name, {}):
            raise _Refused(ErrorCode.RESOURCE_NOT_FOUND, f"user {op.name!r} has no {mechanism} credential")
        return {"type": REMOVE_SCRAM_CREDENTIAL_RECORD, "name": op.name, "mechanism": mechanism}
    if len(op.salted_password) != _DIGEST_BYTES[mechanism]:
        raise _Refused(ErrorCode.UNACCEPTABLE_CREDENTIAL, f"a {mechanism} salted password is "
                                                          f"{_DIGEST_BYTES[mechanism]} bytes, got {len(op.salted_password)}")
    stored_key, server_key = scram_keys(mechanism, op.salted_password)
    record = {"type": SCRAM_CREDENTIAL_RECORD, "name": op.name, "mechanism": mechanism, "salt": op.salt,
              "iterations": op.iterations, "stored_key": stored_key, "server_key": server_key}
    try:
        return check_record(record)
    except ValueError as exc:
        raise _Refused(ErrorCode.UNACCEPTABLE_CREDENTIAL, str(exc)) from None


def alter_user_scram_credentials(app, ctx, request, version, now_ms):
    users = app.control.image.security.users
    ops = [(False, op) for op in request.deletions] + [(True, op) for op in request.upsertions]
    counts = Counter((op.name, op.mechanism) for _, op in ops)
    results: dict[str, dict] = {}  # user -> its result, in request order
    records: dict[str, list[dict]] = {}
    for upsert, op in ops:
        result = results.setdefault(op.name, {"user": op.name, "error_code": 0})
        if result["error_code"]:
            continue
        try:
            records.setdefault(op.name, []).append(_record(op, upsert, users, counts))
        except _Refused as exc:
            result.update(error_code=exc.code, error_message=exc.message)
            records.pop(op.name, None)
    changes = [record for user_records in records.values() for record in user_records]
    answer = {"results": list(results.values())}
    if not changes:
        return answer
    return then(app.admin.alter_security(ctx, AlterSecurity(changes), now_ms), lambda _value: answer)


def error(request, version, code, message):
    names = dict.fromkeys(op.name for op in (*request.deletions, *request.upsertions))
    return {"results": [{"user": name, "error_code": code, "error_message": message} for name in names]}


ROUTE = KafkaRoute(API_KEY, "AlterUserScramCredentials", VERSIONS, alter_user_scram_credentials, error=error,
                   access=lambda request: [(Operation.ALTER, CLUSTER)])
