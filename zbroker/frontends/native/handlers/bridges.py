"""bridge_status: the bridges and mirrors this broker runs (docs/bridge.md)."""

from __future__ import annotations

from zbroker import protocol as P
from zbroker.frontends.native.router import Route
from zbroker.security import CLUSTER, Operation


def bridge_status(app, ctx, fields, payloads, now_ms):
    host = app.bridges
    return [] if host is None else host.status(now_ms)


def bridge_status_reply(entries: list[dict]):
    return {"bridges": entries}, []


ROUTES = [Route(P.BRIDGE_STATUS, bridge_status, bridge_status_reply, access=lambda f: [(Operation.DESCRIBE, CLUSTER)])]
