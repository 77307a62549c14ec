"""ListGroups (key 16): the groups this broker coordinates.

Kafka's admin clients ask every broker and merge the answers, as here: each broker
lists the groups of the ``__consumer_offsets`` partitions it leads.  States are
Kafka's names (``Stable``, ``Reconciling``, ``Empty``, ...); ``states_filter`` (v4+)
and ``types_filter`` (v5+, ``consumer`` or ``classic``) are matched
case-insensitively, an empty filter matching every group.  A native or KIP-848 group
is of type ``consumer`` with protocol type ``consumer``; a classic group of type
``classic`` with the protocol type its members joined with.

A principal sees the groups it may DESCRIBE (all of them with DESCRIBE on the cluster),
as Kafka's ListGroups filters them.
"""

from __future__ import annotations

from zbroker.frontends.kafka import groupmap
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import describable_groups

API_KEY = 16
VERSIONS = (0, 5)


def list_groups(app, ctx, request, version, now_ms):
    states = list(getattr(request, "states_filter", ()) or ())
    types = [t.lower() for t in getattr(request, "types_filter", ()) or ()]
    groups = []
    listings = app.groups.list_groups(ctx)
    visible = describable_groups(app.authorizer, ctx, (g.group for g in listings))
    for g in listings:
        if g.group not in visible:
            continue
        if not groupmap.state_matches(g.state, states) or (types and g.group_type not in types):
            continue
        groups.append({"group_id": g.group, "protocol_type": g.protocol_type, "group_state": groupmap.kafka_state(g.state),
                       "group_type": g.group_type})
    return {"error_code": 0, "groups": groups}


ROUTE = KafkaRoute(API_KEY, "ListGroups", VERSIONS, list_groups)  # filtered per group: no pairs for the router
