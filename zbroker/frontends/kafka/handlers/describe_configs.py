"""DescribeConfigs (key 32): topic and broker configs in Kafka's names, values as strings.

Answered by any broker from its metadata image and the cluster's config file (no
controller needed).  For a topic, every config of :data:`..configs.TOPIC_CONFIG_NAMES`:
its value, where it comes from (``config_source``: DYNAMIC_TOPIC_CONFIG for the topic's
own override, STATIC_BROKER_CONFIG for a ``[topic_defaults]`` entry of the config file,
DEFAULT_CONFIG for zbroker's built-in default), ``read_only`` for the Kafka configs
zbroker has no setting for, the synonyms chain if asked (v1+), the type (v3+) and a line
of documentation if asked (v3+).  For a broker (``resource_name`` its id, or ``""``),
the broker-level settings, all read-only.  ``configuration_keys`` names the configs to
list (null: all, an empty list: none); names not known are left out, as Kafka does.
"""

from __future__ import annotations

from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import configs
from zbroker.frontends.kafka.configs import ResourceType
from zbroker.frontends.kafka.resources import (
    PER_RESOURCE, access, broker_entry, config_refusal, duplicates, resource_errors, unsupported,
)
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation

API_KEY = 32
VERSIONS = (1, 4)


def describe_configs(app, ctx, request, version, now_ms):
    synonyms = bool(request.include_synonyms)
    documentation = bool(getattr(request, "include_documentation", False))
    twice = duplicates((r.resource_type, r.resource_name) for r in request.resources)
    results = []
    for r in request.resources:
        result = {"resource_type": r.resource_type, "resource_name": r.resource_name, "configs": []}
        try:
            if (r.resource_type, r.resource_name) in twice:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"resource {r.resource_name!r} is named more than once")
            denied = config_refusal(ctx, Operation.DESCRIBE, r)
            if denied is not None:
                raise denied
            result["configs"] = _describe(app, r, synonyms, documentation)
        except RequestError as exc:
            result.update(error_code=exc.code, error_message=exc.message)
        results.append(result)
    return {"results": results}


def _describe(app, r, synonyms: bool, documentation: bool) -> list[dict]:
    names = r.configuration_keys  # null: every config (an empty list: none, as in Kafka)
    if r.resource_type == ResourceType.TOPIC:
        meta = app.admin.known_topic(r.resource_name)
        return configs.describe_topic(app.config, meta.overrides, names, synonyms, documentation)
    if r.resource_type == ResourceType.BROKER:
        return configs.describe_broker(app.config, broker_entry(app, r.resource_name), names, synonyms, documentation)
    raise unsupported(r.resource_type)


def _error(request, version, code, message):
    return {"results": resource_errors(request, code, message)}


ROUTE = KafkaRoute(API_KEY, "DescribeConfigs", VERSIONS, describe_configs, error=_error,
                   access=lambda request: access(request, Operation.DESCRIBE), per_resource=PER_RESOURCE)
