"""AlterConfigs (key 33): replace a topic's whole set of config overrides.

Kafka's older config API: the configs a resource lists become its overrides and every
override it does not list is removed (back to the broker default); a null value leaves
a config unset.  Names and values are Kafka's, mapped by :mod:`..configs` (an unknown
or unsupported config is INVALID_CONFIG naming it).  The change goes through the
controller (``validate_only``: checked there, nothing changed).  Broker resources are
read-only.  :mod:`.incremental_alter_configs` changes configs one by one.
"""

from __future__ import annotations

from zbroker.frontends.kafka import configs
from zbroker.frontends.kafka.resources import alter_route

API_KEY = 33
VERSIONS = (0, 2)


def _replace(resource, overrides: dict, effective: dict) -> dict:
    return configs.replacement(overrides, ((c.name, c.value) for c in resource.configs))


ROUTE = alter_route(API_KEY, "AlterConfigs", VERSIONS, _replace)
