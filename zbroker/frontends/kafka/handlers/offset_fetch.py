"""OffsetFetch (key 9): a group's committed offsets.

v1-v7 ask for one group, v8+ for several (``groups``), each answered on its own.
``topics`` null (v2+) asks for every partition the group committed.  A partition
without a committed offset answers -1.  ``committed_leader_epoch`` is -1: the
coordinator does not keep it (see offset_commit).  ``require_stable`` (v7+) needs no
waiting: zbroker has no transactions, so no offset is ever pending.  The KIP-848
``member_id``/``member_epoch`` of v9+ are not checked: fetching offsets changes
nothing.  v10 names topics by id.

Each group needs DESCRIBE on it (else GROUP_AUTHORIZATION_FAILED for that group), each
topic asked for DESCRIBE on it (else TOPIC_AUTHORIZATION_FAILED on its partitions);
asked for every partition, a group answers only the topics the principal may describe,
as Kafka does.

Errors of a group (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...) go to the
group's ``error_code`` (v8+), the top-level ``error_code`` (v2-v7), and each
partition asked for (v1-v7, which is where v1 clients look).
"""

from __future__ import annotations

from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka import datapath
from zbroker.frontends.kafka.groupmap import check_group
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, allowed, group, topic

API_KEY = 9
VERSIONS = (1, 10)


def _groups(request, version: int) -> list:
    """``[(group_id, topics or None), ...]`` whatever the version's layout."""
    if version >= 8:
        return [(g.group_id, g.topics) for g in request.groups]
    return [(request.group_id, request.topics)]


def fetch_group(app, ctx, group_id: str, topics, version: int, now_ms: int) -> dict:
    """One group's answer: ``{group_id, error_code, topics: [...]}``."""
    by_id = version >= 10
    names = {t.topic_id: datapath.topic_name(app, t.topic_id) for t in topics or ()} if by_id else None
    asked = denied = None
    if topics is not None:
        asked = [(names[t.topic_id] if by_id else t.name, p) for t in topics for p in t.partition_indexes]
        denied = {name for name, _p in asked if datapath.topic_refusal(ctx, Operation.DESCRIBE, name) is not None}
    try:
        check_group(ctx, Operation.DESCRIBE, group_id)
        committed = app.groups.offset_fetch(ctx, group_id, [tp for tp in asked if tp[0] and tp[0] not in denied]
                                            if asked is not None else None, now_ms)
    except RequestError as exc:
        return {"group_id": group_id, "error_code": exc.code, "topics": _topics(topics, by_id, {}, exc.code)}
    found = {(o.topic, o.partition): (o.offset, o.metadata) for o in committed}
    if topics is not None:
        return {"group_id": group_id, "error_code": 0, "topics": _topics(topics, by_id, found, 0, names, denied)}
    visible = set(allowed(app.authorizer, ctx, Operation.DESCRIBE, [topic(n) for n in {n for n, _p in found}]))
    out: dict[str, list] = {}  # every partition the group committed, of the topics the principal may describe
    for (name, p), (offset, metadata) in sorted(found.items()):
        if topic(name) not in visible:
            continue
        key = datapath.topic_id_of(app, name) if by_id else name
        if key is not None:
            out.setdefault(key, []).append(_partition(p, offset, metadata, 0))
    field = "topic_id" if by_id else "name"
    return {"group_id": group_id, "error_code": 0, "topics": [{field: key, "partitions": parts} for key, parts in out.items()]}


def _partition(p: int, offset: int, metadata: str, code: int) -> dict:
    return {"partition_index": p, "committed_offset": offset, "committed_leader_epoch": -1, "metadata": metadata,
            "error_code": code}


def _topics(topics, by_id: bool, found: dict, code: int, names: dict | None = None, denied: set | None = None) -> list[dict]:
    """The answer for the partitions asked for (none if ``topics`` is None); the topics of
    ``denied`` answer TOPIC_AUTHORIZATION_FAILED."""
    out = []
    for t in topics or ():
        name, entry = ((names or {}).get(t.topic_id), {"topic_id": t.topic_id}) if by_id else (t.name, {"name": t.name})
        if denied and name in denied:
            parts = [_partition(p, -1, "", ErrorCode.TOPIC_AUTHORIZATION_FAILED) for p in t.partition_indexes]
            out.append({**entry, "partitions": parts})
            continue
        parts = [_partition(p, *found.get((name, p), (-1, "")), code) for p in t.partition_indexes]
        out.append({**entry, "partitions": parts})
    return out


def offset_fetch(app, ctx, request, version, now_ms):
    answers = [fetch_group(app, ctx, g, topics, version, now_ms) for g, topics in _groups(request, version)]
    if version >= 8:
        return {"groups": answers}
    return {"error_code": answers[0]["error_code"], "topics": answers[0]["topics"]}


def _error(request, version, code, message):
    answers = [{"group_id": g, "error_code": code, "topics": _topics(topics, version >= 10, {}, code)}
               for g, topics in ([] if request is None else _groups(request, version))]
    if version >= 8:
        return {"groups": answers}
    return {"error_code": code, "topics": answers[0]["topics"] if answers else []}


def _access(request):
    groups = request.groups if hasattr(request, "groups") else [request]
    return [*((Operation.DESCRIBE, group(g.group_id)) for g in groups),
            *(pair for g in groups for pair in datapath.topic_access(Operation.DESCRIBE, g.topics or (), "name"))]


ROUTE = KafkaRoute(API_KEY, "OffsetFetch", VERSIONS, offset_fetch, error=_error, access=_access,
                   per_resource=frozenset({ResourceType.GROUP, ResourceType.TOPIC}))
