"""Config resources of the Kafka admin APIs: topics and brokers, described and altered.

DescribeConfigs, AlterConfigs and IncrementalAlterConfigs name resources by
``(resource_type, resource_name)``.  zbroker serves two types:

- TOPIC (2): the topic's settings, through :mod:`.configs`' name table; altered through
  the controller (``app.admin.alter_topic_config``), as the native door does;
- BROKER (4): ``resource_name`` a broker id, or ``""`` for the cluster-wide defaults.
  Every broker's settings come from the one config file, so any broker describes any
  other; they are read-only (changing one is INVALID_CONFIG naming it).

Any other type (BROKER_LOGGER, CLIENT_METRICS, GROUP) is INVALID_REQUEST for that
resource.  A resource named twice in one request is INVALID_REQUEST, as Kafka answers.

Authorization, per resource as Kafka answers it: a topic needs DESCRIBE (describing) or
ALTER (altering) on it, else TOPIC_AUTHORIZATION_FAILED; a broker the same on the
cluster, else CLUSTER_AUTHORIZATION_FAILED.  (Kafka's DESCRIBE_CONFIGS and ALTER_CONFIGS
are zbroker's ``describe`` and ``alter``.)
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

from zbroker.config import BrokerEntry
from zbroker.control.topicadmin import AlterTopicConfig
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import configs
from zbroker.frontends.kafka.configs import ResourceType
from zbroker.frontends.kafka.gather import Outcome, failed, gather
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import CLUSTER, Operation, Resource, refusal, topic
from zbroker.security import ResourceType as AclResourceType

#: The resource types config requests answer refusals of one by one.
PER_RESOURCE = frozenset({AclResourceType.TOPIC, AclResourceType.CLUSTER})


def broker_entry(app, name: str) -> BrokerEntry | None:
    """The broker a BROKER resource names (None for ``""``: the cluster-wide defaults).

    Raises:
        RequestError: INVALID_REQUEST for a name that is no broker id of this cluster.
    """
    if name == "":
        return None
    for b in app.config.brokers:
        if str(b.id) == name:
            return b
    raise RequestError(ErrorCode.INVALID_REQUEST, f"no broker {name!r} in this cluster "
                                                  f"(ids: {', '.join(str(b.id) for b in app.config.brokers)})")


def unsupported(resource_type: int) -> RequestError:
    return RequestError(ErrorCode.INVALID_REQUEST, f"config resource type {resource_type} is not supported: "
                                                   "zbroker has topic (2) and broker (4) configs")


def kafka_outcome(outcome: Outcome) -> Outcome:
    """A service's INVALID_CONFIG message in Kafka's config names."""
    if outcome.error_code == ErrorCode.INVALID_CONFIG and outcome.error_message:
        outcome.error_message = configs.kafka_message(outcome.error_message)
    return outcome


def duplicates(keys: Iterable) -> set:
    return {k for k, n in Counter(keys).items() if n > 1}


def _resource(r) -> Resource | None:
    """What a config resource is to the authorizer: its topic, or the cluster for a broker."""
    if r.resource_type == ResourceType.TOPIC:
        return topic(r.resource_name)
    if r.resource_type == ResourceType.BROKER:
        return CLUSTER
    return None


def access(request, operation: Operation) -> list:
    """What a config request touches: each topic (``operation``), and the cluster for brokers."""
    return [(operation, res) for res in map(_resource, request.resources) if res is not None]


def config_refusal(ctx, operation: Operation, r) -> RequestError | None:
    """The error of a config resource the router refused (``ctx.refused``), else None."""
    res = _resource(r) if ctx.refused else None
    return refusal(ctx, operation, res) if res is not None and res in ctx.refused else None


def resource_errors(request, code, message, **extra) -> list[dict]:
    """The whole request refused: each resource answers ``code``."""
    resources = [] if request is None else request.resources
    return [{"error_code": code, "error_message": message, "resource_type": r.resource_type,
             "resource_name": r.resource_name, **extra} for r in resources]


def alter_route(api_key: int, name: str, versions: tuple[int, int], change: Callable[[Any, dict, dict], dict]) -> KafkaRoute:
    """The route of AlterConfigs or IncrementalAlterConfigs, which differ in ``change``
    (see :func:`alter`)."""

    def call(app, ctx, request, version, now_ms):
        return alter(app, ctx, request, now_ms, change)

    def error(request, version, code, message):
        return {"responses": resource_errors(request, code, message)}

    return KafkaRoute(api_key, name, versions, call, error=error, access=lambda request: access(request, Operation.ALTER),
                      per_resource=PER_RESOURCE)


def alter(app, ctx, request, now_ms: int, change: Callable[[Any, dict, dict], dict]) -> dict:
    """AlterConfigs and IncrementalAlterConfigs: ``change(resource, overrides, effective)``
    is the ``{key: value or None}`` change for one topic resource, given its overrides and
    effective settings (raising RequestError for a bad one).  Answers ``{"responses": [...]}`` once every resource settled."""
    validate_only = bool(getattr(request, "validate_only", False))
    twice = duplicates((r.resource_type, r.resource_name) for r in request.resources)
    calls = []
    for r in request.resources:
        key = (r.resource_type, r.resource_name)
        denied = config_refusal(ctx, Operation.ALTER, r)
        if key in twice:
            calls.append((key, failed(ErrorCode.INVALID_REQUEST, f"resource {r.resource_name!r} is named more than once")))
        elif denied is not None:
            calls.append((key, failed(denied.code, denied.message)))
        elif r.resource_type == ResourceType.TOPIC:
            calls.append((key, lambda r=r: _alter_topic(app, ctx, r, validate_only, change, now_ms)))
        elif r.resource_type == ResourceType.BROKER:
            calls.append((key, lambda r=r: _alter_broker(app, r)))
        else:
            error = unsupported(r.resource_type)
            calls.append((key, failed(error.code, error.message)))

    def answer(outcomes: dict) -> dict:
        responses = []
        for key in dict.fromkeys((r.resource_type, r.resource_name) for r in request.resources):
            outcome = kafka_outcome(outcomes[key])
            responses.append({"error_code": outcome.error_code, "error_message": outcome.error_message,
                              "resource_type": key[0], "resource_name": key[1]})
        return {"responses": responses}

    return gather(calls, answer)


def _alter_topic(app, ctx, resource, validate_only: bool, change, now_ms: int):
    meta = app.admin.known_topic(resource.resource_name)
    effective = app.config.topic_settings(meta.overrides)
    changes = change(resource, meta.overrides, effective)
    return app.admin.alter_topic_config(ctx, AlterTopicConfig(meta.name, changes, validate_only), now_ms)


def _alter_broker(app, resource) -> None:
    broker_entry(app, resource.resource_name)
    if resource.configs:
        name = resource.configs[0].name
        raise configs.invalid(f"{name}: broker settings come from zbroker's config file; they cannot be changed "
                              "through Kafka's API")
