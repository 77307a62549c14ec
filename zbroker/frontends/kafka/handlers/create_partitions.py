"""CreatePartitions (key 37): more partitions for existing topics, through the controller.

``count`` is the new total (more than the topic has: else INVALID_PARTITIONS, as the
native door answers).  Manual replica ``assignments`` are refused with
INVALID_REPLICA_ASSIGNMENT: zbroker's controller places replicas itself.
``validate_only`` checks and adds nothing.  A topic named twice is INVALID_REQUEST.
"""

from __future__ import annotations

from zbroker.control.topicadmin import CreatePartitions
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka.datapath import topic_refusal
from zbroker.frontends.kafka.gather import failed, gather
from zbroker.frontends.kafka.resources import duplicates
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, topic

API_KEY = 37
VERSIONS = (0, 3)


def create_partitions(app, ctx, request, version, now_ms):
    twice = duplicates(t.name for t in request.topics)
    calls = []
    for t in {t.name: t for t in request.topics}.values():
        denied = topic_refusal(ctx, Operation.ALTER, t.name)
        if t.name in twice:
            calls.append((t.name, failed(ErrorCode.INVALID_REQUEST, f"topic {t.name!r} is named more than once")))
        elif denied is not None:
            calls.append((t.name, failed(denied.code, denied.message)))
        else:
            calls.append((t.name, lambda t=t: _add(app, ctx, t, request.validate_only, now_ms)))

    def answer(outcomes):
        return {"results": [{"name": name, "error_code": o.error_code, "error_message": o.error_message}
                            for name, o in ((n, outcomes[n]) for n in dict.fromkeys(t.name for t in request.topics))]}

    return gather(calls, answer)


def _add(app, ctx, t, validate_only: bool, now_ms: int):
    if t.assignments:
        raise RequestError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                           "manual replica assignments are not supported: zbroker places replicas itself")
    return app.admin.create_partitions(ctx, CreatePartitions(t.name, t.count, validate_only), now_ms)


def _error(request, version, code, message):
    names = [] if request is None else dict.fromkeys(t.name for t in request.topics)
    return {"results": [{"name": n, "error_code": code, "error_message": message} for n in names]}


def _access(request):
    return [(Operation.ALTER, topic(t.name)) for t in request.topics]


ROUTE = KafkaRoute(API_KEY, "CreatePartitions", VERSIONS, create_partitions, error=_error, access=_access,
                   per_resource=frozenset({ResourceType.TOPIC}))
