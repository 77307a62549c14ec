"""The Kafka request handlers: one module per API key, each with a ``ROUTE``.

A handler module names its API key and version range and holds one thin function
that turns kio's request dataclass into typed service calls and the result into a dict
of response fields.  Every module of this package that defines ``ROUTE`` is in the
table (:data:`ROUTES`); ApiVersions is built last, from the others, so what it
advertises is exactly what the table serves.
"""

from __future__ import annotations

import importlib
import pkgutil

from zbroker.frontends.kafka.handlers import api_versions


def _collect() -> list:
    routes = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "ROUTE"):
            routes.append(module.ROUTE)
    return routes


ROUTES = _collect()
ROUTES.append(api_versions.route(ROUTES))
