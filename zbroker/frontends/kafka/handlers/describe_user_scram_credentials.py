"""DescribeUserScramCredentials (key 50, KIP-554): users' SCRAM mechanisms and iterations.

Every user (``users`` null) or the ones named: per user its mechanisms (1 = SCRAM-SHA-256,
2 = SCRAM-SHA-512) and iteration counts, never salts or keys; RESOURCE_NOT_FOUND for a user
without credentials, DUPLICATE_RESOURCE for a name asked twice.  Needs DESCRIBE on the
cluster (what `zbroker users list` needs).
"""

from __future__ import annotations

from collections import Counter

from zbroker.errors import ErrorCode
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation

API_KEY = 50
VERSIONS = (0, 0)
#: Kafka's numbers for the SCRAM mechanisms (org.apache.kafka.clients.admin.ScramMechanism).
MECHANISM_IDS = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}


def describe_user_scram_credentials(app, ctx, request, version, now_ms):
    users = app.control.image.security.users
    names = sorted(users) if request.users is None else [u.name for u in request.users]
    asked = Counter(names)
    results = []
    for name in asked:  # each name once, in request order
        if asked[name] > 1:
            results.append({"user": name, "error_code": ErrorCode.DUPLICATE_RESOURCE,
                            "error_message": f"user {name[:64]!r} is asked for more than once"})
        elif name not in users:
            results.append({"user": name, "error_code": ErrorCode.RESOURCE_NOT_FOUND,
                            "error_message": f"no user {name[:64]!r}"})
        else:
            results.append({"user": name, "credential_infos": [
                {"mechanism": MECHANISM_IDS[m], "iterations": c.iterations} for m, c in sorted(users[name].items())]})
    return {"error_code": 0, "results": results}


ROUTE = KafkaRoute(API_KEY, "DescribeUserScramCredentials", VERSIONS, describe_user_scram_credentials,
                   access=lambda request: [(Operation.DESCRIBE, CLUSTER)])
