"""IncrementalAlterConfigs (key 44): change a topic's configs one by one.

Each config has an operation: SET (0) a value, DELETE (1) the override (back to the
broker default), APPEND (2) or SUBTRACT (3) items of a list config (``cleanup.policy``;
on any other config INVALID_REQUEST).  Names and values are Kafka's, mapped by
:mod:`..configs` (an unknown or unsupported config is INVALID_CONFIG naming it).  The
change goes through the controller (``validate_only``: checked there, nothing changed).
Broker resources are read-only.
"""

from __future__ import annotations

from zbroker.frontends.kafka import configs
from zbroker.frontends.kafka.resources import alter_route

API_KEY = 44
VERSIONS = (0, 1)


def _change(resource, overrides: dict, effective: dict) -> dict:
    return configs.incremental(effective, ((c.name, c.config_operation, c.value) for c in resource.configs))


ROUTE = alter_route(API_KEY, "IncrementalAlterConfigs", VERSIONS, _change)
