"""find_coordinator, group_heartbeat, offset_commit, offset_fetch, list_groups, describe_group, delete_group."""

from __future__ import annotations

from zbroker import protocol as P
from zbroker.frontends.native.router import Route
from zbroker.groups.coordinator import CommitOffset, Coordinator, GroupDetail, HeartbeatResult, OffsetCommit
from zbroker.groups.group import MemberHeartbeat
from zbroker.security import Operation, allowed, describable_groups, group, topic


def _lists(tps) -> list[list]:
    return [list(tp) for tp in tps]


def find_coordinator(app, ctx, fields, payloads, now_ms):
    return app.groups.find_coordinator(ctx, fields["group"], now_ms)


def find_coordinator_reply(c: Coordinator):
    return {"coordinator": c.broker_id, "host": c.host, "port": c.port}, []


def group_heartbeat(app, ctx, fields, payloads, now_ms):
    req = MemberHeartbeat(fields["group"], fields["member_epoch"], fields["member_id"], fields["instance_id"],
                          fields["client_id"], fields["topics"], fields["owned"], fields["assignor"],
                          fields["rebalance_timeout_ms"], fields["session_timeout_ms"])
    return app.groups.heartbeat(ctx, req, now_ms)


def group_heartbeat_reply(r: HeartbeatResult):
    a = r.answer
    return {"heartbeat_interval_ms": r.heartbeat_interval_ms, "member_id": a.member_id, "member_epoch": a.member_epoch,
            "assignment": _lists(a.assignment)}, []


def offset_commit(app, ctx, fields, payloads, now_ms):
    offsets = [CommitOffset(o["topic"], o["partition"], o["offset"], o["metadata"]) for o in fields["offsets"]]
    return app.groups.offset_commit(ctx, OffsetCommit(fields["group"], offsets, fields["member_id"], fields["member_epoch"]), now_ms)


def offset_commit_reply(tps):
    return {"results": [{"topic": t, "partition": p, "error": 0} for t, p in tps]}, []


def offset_fetch(app, ctx, fields, payloads, now_ms):
    offsets = app.groups.offset_fetch(ctx, fields["group"], fields["partitions"], now_ms)
    if fields["partitions"] is not None:
        return offsets  # the topics asked for were authorized by the router
    visible = set(allowed(app.authorizer, ctx, Operation.DESCRIBE, {topic(o.topic) for o in offsets}))
    return [o for o in offsets if topic(o.topic) in visible]


def offset_fetch_reply(offsets):
    return {"offsets": [{"topic": o.topic, "partition": o.partition, "offset": o.offset, "metadata": o.metadata, "error": 0}
                        for o in offsets]}, []


def list_groups(app, ctx, fields, payloads, now_ms):
    listings = app.groups.list_groups(ctx)
    visible = describable_groups(app.authorizer, ctx, (g.group for g in listings))
    return [g for g in listings if g.group in visible]


def list_groups_reply(groups):
    return {"groups": [{"group": g.group, "state": g.state, "members": g.members} for g in groups]}, []


def describe_group(app, ctx, fields, payloads, now_ms):
    return app.groups.describe_group(ctx, fields["group"], now_ms)


def describe_group_reply(g: GroupDetail):
    return {
        "group": g.group, "state": g.state, "group_epoch": g.group_epoch, "assignor": g.assignor,
        "members": [{"member_id": m.member_id, "instance_id": m.instance_id, "client_id": m.client_id, "topics": m.topics,
                     "member_epoch": m.member_epoch, "assignment": _lists(m.assignment), "revoking": _lists(m.revoking)}
                    for m in g.members],
        "offsets": [{"topic": o.topic, "partition": o.partition, "offset": o.offset, "metadata": o.metadata} for o in g.offsets],
    }, []


def delete_group(app, ctx, fields, payloads, now_ms):
    return app.groups.delete_group(ctx, fields["group"], now_ms)


def _on_group(operation):
    return lambda f: [(operation, group(f["group"]))]


def _topics_of(operation, names):
    return [(operation, topic(n)) for n in dict.fromkeys(names)]


ROUTES = [
    Route(P.FIND_COORDINATOR, find_coordinator, find_coordinator_reply, access=_on_group(Operation.DESCRIBE)),
    Route(P.GROUP_HEARTBEAT, group_heartbeat, group_heartbeat_reply,
          access=lambda f: [(Operation.READ, group(f["group"])), *_topics_of(Operation.DESCRIBE, f["topics"] or ())]),
    Route(P.OFFSET_COMMIT, offset_commit, offset_commit_reply,
          access=lambda f: [(Operation.READ, group(f["group"])), *_topics_of(Operation.READ, (o["topic"] for o in f["offsets"]))]),
    Route(P.OFFSET_FETCH, offset_fetch, offset_fetch_reply,
          access=lambda f: [(Operation.DESCRIBE, group(f["group"])),
                            *_topics_of(Operation.DESCRIBE, (tp[0] for tp in f["partitions"] or ()
                                                               if tp and isinstance(tp[0], str)))]),
    Route(P.LIST_GROUPS, list_groups, list_groups_reply),  # filtered: the groups the principal may describe
    Route(P.DESCRIBE_GROUP, describe_group, describe_group_reply, access=_on_group(Operation.DESCRIBE)),
    Route(P.DELETE_GROUP, delete_group, access=_on_group(Operation.DELETE)),
]
