"""api_versions: the request types and protocol versions this broker serves.

The answer is read from the native router's own table (:data:`ROUTES` of this package,
each :class:`Route`'s ``versions``), so it cannot disagree with what the router accepts.
"""

from __future__ import annotations

from zbroker import protocol as P
from zbroker.frontends.native.router import Route


def served_versions(routes) -> list[dict]:
    """One entry per route, sorted by type: ``{type, min, max, broker_only}``."""
    return [{"type": r.kind, "min": r.versions[0], "max": r.versions[1], "broker_only": r.kind in P.BROKER_ONLY}
            for r in sorted(routes, key=lambda r: r.kind)]


def api_versions(app, ctx, fields, payloads, now_ms):
    from zbroker.frontends.native.handlers import ROUTES  # the whole table (this module is part of it)

    return served_versions(ROUTES)


def api_versions_reply(versions: list[dict]):
    return {"versions": versions}, []


# anyone may ask (it names no resource), at any version: a refused version still gets the list
ROUTES = [Route(P.API_VERSIONS, api_versions, api_versions_reply, any_version=True)]
