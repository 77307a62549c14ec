"""CreateTopics (key 19): topics created through the controller, as the native door does.

- ``num_partitions`` / ``replication_factor`` -1 take the broker defaults
  (``[topic_defaults]``); ``configs`` are Kafka's names and string values, mapped by
  :mod:`..configs` (an unknown or unsupported config is INVALID_CONFIG naming it).
- Manual replica ``assignments`` are refused with INVALID_REPLICA_ASSIGNMENT: zbroker's
  controller places every replica itself.
- ``validate_only`` checks everything and creates nothing.
- A name given twice is INVALID_REQUEST; an existing topic TOPIC_ALREADY_EXISTS.
- v5+ answers with the created topic's partition count, replication factor and
  configs; v7 with its topic id (from this broker's image, which holds the topic once
  the controller -- this broker or the one it forwarded to -- answered; if it does not
  yet, the requested values are reported and no id).

The request's ``timeout`` is not used: the controller answers within its own 30 s.
"""

from __future__ import annotations

from zbroker.control.topicadmin import CreateTopic
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import configs
from zbroker.frontends.kafka.datapath import topic_refusal
from zbroker.frontends.kafka.gather import failed, gather
from zbroker.frontends.kafka.resources import duplicates, kafka_outcome
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, topic

API_KEY = 19
VERSIONS = (2, 7)
BROKER_DEFAULT = -1


def create_topics(app, ctx, request, version, now_ms):
    twice = duplicates(t.name for t in request.topics)
    requested = {t.name: t for t in request.topics}
    overrides: dict[str, dict] = {}  # name -> its configs in zbroker's terms
    calls = []
    for t in requested.values():
        denied = topic_refusal(ctx, Operation.CREATE, t.name)
        if t.name in twice:
            calls.append((t.name, failed(ErrorCode.INVALID_REQUEST, f"topic {t.name!r} is named more than once")))
        elif denied is not None:
            calls.append((t.name, failed(denied.code, denied.message)))
        else:
            calls.append((t.name, lambda t=t: _create(app, ctx, t, request.validate_only, overrides, now_ms)))

    def answer(outcomes):
        return {"topics": [_result(app, t, kafka_outcome(outcomes[name]), overrides.get(name, {}), request.validate_only)
                           for name, t in requested.items()]}

    return gather(calls, answer)


def _create(app, ctx, t, validate_only: bool, overrides: dict, now_ms: int):
    if t.assignments:
        raise RequestError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                           "manual replica assignments are not supported: zbroker places replicas itself "
                           "(give num_partitions and replication_factor instead)")
    overrides[t.name] = configs.creation_overrides((c.name, c.value) for c in t.configs)
    partitions = None if t.num_partitions == BROKER_DEFAULT else t.num_partitions
    rf = None if t.replication_factor == BROKER_DEFAULT else t.replication_factor
    return app.admin.create_topic(ctx, CreateTopic(t.name, partitions, rf, overrides[t.name], validate_only), now_ms)


def _result(app, t, outcome, overrides: dict, validate_only: bool) -> dict:
    result = {"name": t.name, "error_code": outcome.error_code, "error_message": outcome.error_message,
              "num_partitions": -1, "replication_factor": -1, "configs": None, "topic_id": None}
    if outcome.error_code:
        return result
    meta = app.control.image.get(t.name)
    if meta is not None and not validate_only:
        result.update(num_partitions=meta.partition_count, replication_factor=len(meta.partitions[0].replicas),
                      topic_id=meta.topic_id, configs=configs.describe_topic(app.config, meta.overrides))
    else:  # validate_only, or created but not yet in this broker's image
        result.update(num_partitions=app.config.default_partitions() if t.num_partitions == BROKER_DEFAULT else t.num_partitions,
                      replication_factor=(app.config.default_replication_factor() if t.replication_factor == BROKER_DEFAULT
                                          else t.replication_factor),
                      configs=configs.describe_topic(app.config, overrides))
    return result


def _error(request, version, code, message):
    names = [] if request is None else dict.fromkeys(t.name for t in request.topics)
    return {"topics": [{"name": n, "error_code": code, "error_message": message, "num_partitions": -1,
                        "replication_factor": -1} for n in names]}


def _access(request):
    # CREATE on the topic, or on the cluster (which implies it: see security.acl)
    return [(Operation.CREATE, topic(t.name)) for t in request.topics]


ROUTE = KafkaRoute(API_KEY, "CreateTopics", VERSIONS, create_topics, error=_error, access=_access,
                   per_resource=frozenset({ResourceType.TOPIC}))
