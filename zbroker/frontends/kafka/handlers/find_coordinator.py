"""FindCoordinator (key 10): which broker coordinates a group.

The coordinator of a group is the leader of its ``__consumer_offsets`` partition
(:meth:`GroupCoordinator.find_coordinator`), answered at its *Kafka* address (the
address Metadata advertises); a coordinator without a Kafka listener is
COORDINATOR_NOT_AVAILABLE.  v0-v3 ask for one key, v4+ for a batch
(``coordinator_keys``), each answered on its own.

zbroker has no transactions, yet a transaction coordinator (``key_type`` 1) is answered,
placed as a group of that name would be: the producer's next request, InitProducerId
with its ``transactional_id``, is refused there with INVALID_TXN_STATE and "transactions
are not supported by zbroker" (``init_producer_id.py``).  That is the clear error:
kafka-python fails at once, librdkafka logs it on every retry and ``init_transactions()``
raises it.  Answering COORDINATOR_NOT_AVAILABLE instead, which every client retries,
ended in a bare timeout, the reason never shown.  Share groups (``key_type`` 2) and
unknown types are INVALID_REQUEST.
"""

from __future__ import annotations

from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka.groupmap import check_group
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, group

API_KEY = 10
VERSIONS = (0, 6)
GROUP_KEY, TRANSACTION_KEY = 0, 1


def _keys(request, version: int) -> list[str]:
    return list(request.coordinator_keys) if version >= 4 else [request.key]


def coordinator(app, ctx, key_type: int, key: str, now_ms: int) -> dict:
    """One key's answer (node_id, host, port, error_code, error_message)."""
    try:
        if key_type not in (GROUP_KEY, TRANSACTION_KEY):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown coordinator key type {key_type}")
        if key_type == GROUP_KEY:
            check_group(ctx, Operation.DESCRIBE, key)
        found = app.groups.find_coordinator(ctx, key, now_ms)
        broker = app.config.broker(found.broker_id)
        if not broker.kafka_port:
            raise RequestError(ErrorCode.COORDINATOR_NOT_AVAILABLE,
                               f"the coordinator, broker {found.broker_id}, has no Kafka listener")
    except RequestError as exc:
        return {"key": key, "node_id": -1, "host": "", "port": -1, "error_code": exc.code, "error_message": exc.message}
    return {"key": key, "node_id": broker.id, "host": broker.kafka_advertised_host, "port": broker.kafka_port,
            "error_code": 0, "error_message": None}


def find_coordinator(app, ctx, request, version, now_ms):
    key_type = getattr(request, "key_type", GROUP_KEY)
    answers = [coordinator(app, ctx, key_type, key, now_ms) for key in _keys(request, version)]
    if version >= 4:
        return {"coordinators": answers}
    return answers[0]


def _access(request):
    if getattr(request, "key_type", GROUP_KEY) != GROUP_KEY:
        return []
    keys = request.coordinator_keys if hasattr(request, "coordinator_keys") else [request.key]
    return [(Operation.DESCRIBE, group(k)) for k in keys]


def _error(request, version, code, message):
    keys = [] if request is None else _keys(request, version)
    answers = [{"key": k, "node_id": -1, "host": "", "port": -1, "error_code": code, "error_message": message} for k in keys]
    if version >= 4:
        return {"coordinators": answers}
    return {"node_id": -1, "host": "", "port": -1, "error_code": code, "error_message": message}


ROUTE = KafkaRoute(API_KEY, "FindCoordinator", VERSIONS, find_coordinator, error=_error, access=_access,
                   per_resource=frozenset({ResourceType.GROUP}))
