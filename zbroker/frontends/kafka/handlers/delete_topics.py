"""DeleteTopics (key 20): topics deleted through the controller, as the native door does.

v1-v5 name topics; v6 names each by name *or* by topic id (both at once is
INVALID_REQUEST; an id no topic has is UNKNOWN_TOPIC_ID).  A topic named twice is
INVALID_REQUEST; an unknown name UNKNOWN_TOPIC_OR_PARTITION; ``__consumer_offsets``
INVALID_TOPIC_EXCEPTION (it holds every group's offsets).  The request's ``timeout`` is
not used: the controller answers within its own 30 s.

Each topic needs DELETE on it (a topic named by id is authorized by the name the id
resolves to); a refused one answers TOPIC_AUTHORIZATION_FAILED on its own.
"""

from __future__ import annotations

import uuid

from zbroker.control.topicadmin import DeleteTopic
from zbroker.errors import ErrorCode, RequestError
from zbroker.frontends.kafka.datapath import TopicId, topic_refusal
from zbroker.frontends.kafka.gather import failed, gather
from zbroker.frontends.kafka.resources import duplicates
from zbroker.frontends.kafka.router import KafkaRoute
from zbroker.security import Operation, ResourceType, topic

API_KEY = 20
VERSIONS = (1, 6)
UNKNOWN_TOPIC_ID = 100
_NO_ID = uuid.UUID(int=0)


def _named(request, version) -> list[tuple[str | None, str | None]]:
    """``(name, topic id hex)`` of each topic the request names."""
    if version < 6:
        return [(name, None) for name in request.topic_names]
    return [(t.name, t.topic_id.hex if t.topic_id not in (None, _NO_ID) else None) for t in request.topics]


def delete_topics(app, ctx, request, version, now_ms):
    named = _named(request, version)
    twice = duplicates(named)
    by_id = {meta.topic_id: meta for meta in app.control.image.topics.values()} if any(i for _, i in named) else {}
    calls = []
    for name, topic_id in dict.fromkeys(named):
        if (name, topic_id) in twice:
            calls.append(((name, topic_id), failed(ErrorCode.INVALID_REQUEST, "a topic is named more than once")))
        else:
            calls.append(((name, topic_id), lambda n=name, i=topic_id: _delete(app, ctx, n, i, by_id, now_ms)))

    image = app.control.image
    known = {(name, topic_id): by_id.get(topic_id) if topic_id else image.get(name) for name, topic_id in named}

    def answer(outcomes):
        responses = []
        for key in dict.fromkeys(named):
            meta, outcome = known[key], outcomes[key]
            if outcome.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
                meta = None  # a topic asked for by id and refused: its name is not told
            responses.append({"name": meta.name if meta is not None else key[0],
                              "topic_id": meta.topic_id if meta is not None else key[1],
                              "error_code": outcome.error_code, "error_message": outcome.error_message})
        return {"responses": responses}

    return gather(calls, answer)


def _delete(app, ctx, name: str | None, topic_id: str | None, by_id: dict, now_ms: int):
    if name is not None and topic_id is not None:
        raise RequestError(ErrorCode.INVALID_REQUEST, "give a topic's name or its id, not both")
    if topic_id is not None:
        meta = by_id.get(topic_id)
        if meta is None:
            raise RequestError(UNKNOWN_TOPIC_ID, f"no topic has id {topic_id}")
        name = meta.name
    if name is None:
        raise RequestError(ErrorCode.INVALID_REQUEST, "a topic needs a name or an id")
    denied = topic_refusal(ctx, Operation.DELETE, name)
    if denied is not None:  # by id: the name is not told
        raise denied if topic_id is None else RequestError(denied.code, f"{ctx.principal} may not delete topic id {topic_id}")
    return app.admin.delete_topic(ctx, DeleteTopic(name), now_ms)


def _error(request, version, code, message):
    named = [] if request is None else dict.fromkeys(_named(request, version))
    return {"responses": [{"name": n, "topic_id": i, "error_code": code, "error_message": message} for n, i in named]}


def _access(request):
    if hasattr(request, "topic_names"):
        return [(Operation.DELETE, topic(n)) for n in request.topic_names]
    return [(Operation.DELETE, topic(t.name) if t.name is not None else TopicId(t.topic_id))
            for t in request.topics if t.name is not None or (t.topic_id is not None and t.topic_id.int)]


ROUTE = KafkaRoute(API_KEY, "DeleteTopics", VERSIONS, delete_topics, error=_error, access=_access,
                   per_resource=frozenset({ResourceType.TOPIC}))
