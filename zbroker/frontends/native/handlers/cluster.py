"""Broker-to-broker requests: alter_isr, create_internal_topic, alter_security and the Raft messages.

Each must come from the broker it names (see :attr:`Route.sender`).
"""

from __future__ import annotations

from zbroker import protocol as P
from zbroker.control.topicadmin import AlterIsr, AlterSecurity, CreateInternalTopic
from zbroker.frontends.native.router import ANY_BROKER, NO_REPLY, Route
from zbroker.security import CLUSTER, Operation

_CLUSTER_ACTION = [(Operation.CLUSTER_ACTION, CLUSTER)]


def alter_isr(app, ctx, fields, payloads, now_ms):
    app.admin.alter_isr(ctx, AlterIsr(fields["topic"], fields["partition"], fields["leader"], fields["leader_epoch"],
                                      fields["isr"]), now_ms)
    app.drain_control(now_ms)
    return None


def create_internal_topic(app, ctx, fields, payloads, now_ms):
    app.admin.create_internal_topic(ctx, CreateInternalTopic(fields["topic"], fields["partitions"],
                                                             fields["replication_factor"], fields["config"]), now_ms)
    return NO_REPLY


def alter_security(app, ctx, fields, payloads, now_ms):
    return app.admin.alter_security(ctx, AlterSecurity(fields["records"]), now_ms)


def _raft(kind: str):
    def raft_message(app, ctx, fields, payloads, now_ms):
        app.on_raft_message({**fields, "type": kind}, payloads[0] if payloads else None, now_ms)
        return NO_REPLY  # one-way: never answered

    return raft_message


ROUTES = [
    Route(P.ALTER_ISR, alter_isr, access=lambda f: _CLUSTER_ACTION, sender=lambda f: f["leader"]),
    Route(P.CREATE_INTERNAL_TOPIC, create_internal_topic, access=lambda f: _CLUSTER_ACTION, sender=lambda f: ANY_BROKER),
    Route(P.ALTER_SECURITY, alter_security, access=lambda f: _CLUSTER_ACTION, sender=lambda f: ANY_BROKER),
    *(Route(kind, _raft(kind), access=lambda f: _CLUSTER_ACTION, sender=lambda f: f["from"]) for kind in P.RAFT_SCHEMAS),
]
